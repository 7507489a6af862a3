package dev.kbc.kbpack;

/** One ranked chunk: its id (for KbPack.chunk) and score (inner product, BM25 or fused). */
public final class Hit {
    public final long id;
    public final double score;

    Hit(long id, double score) {
        this.id = id;
        this.score = score;
    }

    @Override
    public String toString() {
        return "Hit(" + id + ", " + score + ")";
    }
}
