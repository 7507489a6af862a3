package dev.kbc.kbpack;

/**
 * What to search for: the question embedded (a float[dim], for dense and hybrid), its text (for
 * lexical and hybrid), how many results, the mode and a scope (filter or where). A builder, so that
 * options libkbpack adds later arrive as new methods, not as new overloads of KbPack.search.
 *
 * <pre>{@code
 * kb.search(Query.of(vector, "How do I rotate the logs?").k(5).mode(Mode.HYBRID))
 * }</pre>
 */
public final class Query {
    final float[] vector;
    final String question;
    int k = 10;
    Mode mode = Mode.DEFAULT;
    Filter filter;
    String[] where;

    private Query(float[] vector, String question) {
        this.vector = vector;
        this.question = question;
    }

    /** Either may be null when the mode does not need it (dense: no question; lexical: no vector). */
    public static Query of(float[] vector, String question) {
        return new Query(vector, question);
    }

    public static Query vector(float[] vector) {
        return new Query(vector, null);
    }

    public static Query text(String question) {
        return new Query(null, question);
    }

    /** How many results, at least 1 (default 10). */
    public Query k(int k) {
        this.k = k;
        return this;
    }

    public Query mode(Mode mode) {
        this.mode = mode == null ? Mode.DEFAULT : mode;
        return this;
    }

    /** Only chunks the filter keeps (compiled once by KbPack.filter, reused across questions). */
    public Query filter(Filter filter) {
        this.filter = filter;
        this.where = null;
        return this;
    }

    /** Only chunks meeting every condition ("product=x200", "year>=2022", "path:manuals/**"):
     *  compiled for this search alone; for several questions in one scope prefer filter(Filter). */
    public Query where(String... conditions) {
        this.where = conditions == null ? null : conditions.clone();
        this.filter = null;
        return this;
    }
}
