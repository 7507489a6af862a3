package dev.kbc.kbpack;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalDouble;

/**
 * An open .kbpack bundle (schemas/FORMAT.md) over libkbpack: open, verify, info, search (chunks or
 * pages, every mode), the answer strength, chunk, probes.
 *
 * <pre>{@code
 * try (KbPack kb = KbPack.open(Paths.get("kb.kbpack"))) {
 *     for (Hit hit : kb.search(Query.of(vector, "How do I rotate the logs?").k(5))) {
 *         Chunk c = kb.chunk(hit.id);
 *         System.out.println(hit.score + " " + c.sourcePath + " p." + c.pageStart + ": " + c.text);
 *     }
 * }
 * // Kotlin: KbPack.open(path).use { kb -> ... }
 * }</pre>
 *
 * A bundle is untrusted input: libkbpack checks what it reads (every call returns in bounded time
 * and memory, a damaged bundle is a KbPackException naming the part). Every failure, a closed
 * handle or a wrong argument included, is a KbPackException; none crashes the JVM. Methods are
 * synchronized: libkbpack's handle is not thread-safe, and close() must not free it under a
 * running search. For parallel searches open one KbPack per thread (they share the file's pages).
 *
 * The native library is libkbpack_jni (System.loadLibrary), or the file the system property
 * kbpack.library names (System.load).
 */
public final class KbPack implements AutoCloseable {
    static {
        String file = System.getProperty("kbpack.library");
        if (file != null && !file.isEmpty()) {
            System.load(file);
        } else {
            System.loadLibrary("kbpack_jni");
        }
    }

    private long handle; // libkbpack's kbp_bundle *, 0 once closed
    // filters compiled on this handle: libkbpack needs them freed before kbp_close
    private final Map<Filter, Boolean> filters = new IdentityHashMap<>();
    private final long count;
    private final int dim;

    private KbPack(long handle) {
        this.handle = handle;
        this.count = nCount(handle);
        this.dim = nDim(handle);
    }

    /** Opens and maps the file, with libkbpack's cheap checks (header, table, manifest, lengths). */
    public static KbPack open(Path path) {
        if (path == null) {
            throw argument("open: the path is null");
        }
        String text = path.toString();
        if (text.indexOf('\0') >= 0) {
            throw argument("open: the path holds a NUL character");
        }
        return new KbPack(nOpenPath(text.getBytes(StandardCharsets.UTF_8)));
    }

    /**
     * Opens a bundle in memory, from position() to limit() (an Android asset read into a buffer):
     * libkbpack copies it, so the buffer may be reused as soon as this returns. A direct buffer is
     * read where it lies; a heap buffer through its array, or copied once when read-only.
     */
    public static KbPack open(ByteBuffer bundle) {
        if (bundle == null) {
            throw argument("open: the buffer is null");
        }
        int offset = bundle.position(), length = bundle.remaining();
        if (bundle.isDirect()) {
            return new KbPack(nOpenMemory(bundle, null, offset, length));
        }
        if (bundle.hasArray()) {
            return new KbPack(nOpenMemory(null, bundle.array(), bundle.arrayOffset() + offset, length));
        }
        byte[] copy = new byte[length];
        bundle.duplicate().get(copy);
        return new KbPack(nOpenMemory(null, copy, 0, length));
    }

    public static KbPack open(byte[] bundle) {
        if (bundle == null) {
            throw argument("open: the array is null");
        }
        return new KbPack(nOpenMemory(null, bundle, 0, bundle.length));
    }

    /** Every check `kbc inspect --verify` makes (reads the whole file); throws naming the first damaged part. */
    public synchronized void verify() {
        nVerify(live());
    }

    public synchronized Info info() {
        long h = live();
        int format = nFormat(h);
        return new Info(format >>> 16, format & 0xffff, count, dim, Chunk.text(nDtype(h)), Chunk.text(nEmbedderName(h)),
                nHasLexical(h), nBinary(h), Chunk.text(nManifestJson(h)));
    }

    /** The mode a search asking for `requested` uses (DEFAULT resolved by the manifest). */
    public synchronized Mode resolveMode(Mode requested) {
        return Mode.of(nResolveMode(live(), (requested == null ? Mode.DEFAULT : requested).ordinal()));
    }

    /** The unit the bundle's author chose (manifest retrieval.unit): CHUNK or PAGE. */
    public synchronized Unit defaultUnit() {
        return Unit.of(nDefaultUnit(live()));
    }

    /** The k best chunks, best first (kbp_search, or kbp_search_filtered with a scope). */
    public synchronized List<Hit> search(Query query) {
        long h = live();
        checkQuery(query);
        int room = (int) Math.max(1, Math.min(query.k, count));
        long[] ids = new long[room];
        double[] scores = new double[room];
        Filter scope = scopeOf(query);
        int n;
        try {
            n = nSearch(h, query.vector, utf8(query.question), query.k, query.mode.ordinal(),
                    scope == null ? 0 : scope.live(), ids, scores);
        } finally {
            if (scope != null && scope != query.filter) {
                release(scope);
            }
        }
        List<Hit> hits = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            hits.add(new Hit(ids[i], scores[i]));
        }
        return Collections.unmodifiableList(hits);
    }

    /**
     * Compiles conditions ("product=x200", "year>=2022", "path:manuals/**"; all must hold) against the
     * bundle's attributes (format 1.7). A condition the bundle cannot apply, or a bundle without
     * attributes, is KbPackException ARGUMENT naming it; close the filter (or this KbPack) to free it.
     */
    public synchronized Filter filter(String... conditions) {
        long h = live();
        if (conditions == null || conditions.length == 0) {
            throw argument("filter: no condition");
        }
        byte[][] bytes = new byte[conditions.length][];
        for (int i = 0; i < conditions.length; i++) {
            if (conditions[i] == null || conditions[i].indexOf('\0') >= 0) {
                throw argument("filter: condition " + i + " is null or holds a NUL character");
            }
            bytes[i] = utf8(conditions[i]);
        }
        Filter f = new Filter(this, nFilterCompile(h, bytes));
        filters.put(f, Boolean.TRUE);
        return f;
    }

    /** Frees a filter of this handle (once); called with this object's lock held. */
    void release(Filter f) {
        if (f.pointer != 0) {
            nFilterFree(f.pointer);
            f.pointer = 0;
            filters.remove(f);
        }
    }

    static long filterMatched(long f) {
        return nFilterMatched(f);
    }

    static boolean filterKeeps(long f, long id) {
        return nFilterKeeps(f, id);
    }

    /** The query's filter: its own, or one compiled now from its where conditions (freed after the search). */
    private Filter scopeOf(Query query) {
        if (query.filter != null) {
            if (query.filter.owner != this) {
                throw argument("search: the filter was compiled on another KbPack");
            }
            query.filter.live();
            return query.filter;
        }
        return query.where == null ? null : filter(query.where);
    }

    public List<Hit> search(float[] vector, String question, int k, Mode mode) {
        return search(Query.of(vector, question).k(k).mode(mode));
    }

    /** The k best pages, best first, each with its best chunks (kbp_search_pages, FORMAT.md §2.8). */
    public synchronized List<PageHit> searchPages(Query query) {
        long h = live();
        checkQuery(query);
        Filter scope = scopeOf(query);
        try {
            return Collections.unmodifiableList(Arrays.asList(nSearchPages(h, query.vector, utf8(query.question),
                    query.k, query.mode.ordinal(), scope == null ? 0 : scope.live())));
        } finally {
            if (scope != null && scope != query.filter) {
                release(scope);
            }
        }
    }

    /**
     * The answer strength of a question whose first hit (of a dense or hybrid search; a page's first
     * chunk) is chunk `firstId`, measured with the question's `vector` (kbp_answer_strength): its
     * confident is FALSE when the strength is under the bundle's threshold ("no confident answer"),
     * null when the bundle records none. Lexical search has no vector and so no strength.
     */
    public synchronized AnswerStrength answerStrength(float[] vector, long firstId) {
        long h = live();
        if (vector == null || vector.length != dim) {
            throw argument("answer strength: the query vector has " + (vector == null ? "no" : vector.length)
                    + " floats, the bundle's vectors " + dim);
        }
        if (firstId < 0 || firstId >= count) {
            throw argument("answer strength: chunk id " + firstId + " is out of range (the bundle has " + count + " chunks)");
        }
        double[] strength = new double[1];
        int confident = nAnswerStrength(h, vector, firstId, strength);
        return new AnswerStrength(strength[0], confident < 0 ? null : Boolean.valueOf(confident == 1));
    }

    /** The bundle's answer-strength threshold (manifest retrieval.min_strength); empty when it records none. */
    public synchronized OptionalDouble minStrength() {
        double[] threshold = new double[1];
        return nMinStrength(live(), threshold) ? OptionalDouble.of(threshold[0]) : OptionalDouble.empty();
    }

    /** Chunk `id` (0 <= id < count) with its provenance. */
    public synchronized Chunk chunk(long id) {
        long h = live();
        if (id < 0 || id >= count) {
            throw argument("chunk: id " + id + " is out of range (the bundle has " + count + " chunks)");
        }
        return nChunk(h, id);
    }

    /** The number of embedder probes; NOT_PRESENT for bundles without them. */
    public synchronized int probeCount() {
        return nProbeCount(live());
    }

    public synchronized Probe probe(int i) {
        return nProbe(live(), i);
    }

    /** Compares an engine's embeddings of every probe's input (row i: probe i) with the bundle's. */
    public synchronized ProbeResult probeCheck(float[][] vectors) {
        long h = live();
        if (vectors == null) {
            throw argument("probe check: the vectors are null");
        }
        float[] flat = new float[Math.multiplyExact(vectors.length, dim)];
        for (int i = 0; i < vectors.length; i++) {
            if (vectors[i] == null || vectors[i].length != dim) {
                throw argument("probe check: vector " + i + " is not " + dim + " floats");
            }
            System.arraycopy(vectors[i], 0, flat, i * dim, dim);
        }
        return nProbeCheck(h, flat, vectors.length);
    }

    /** Frees the handle; later calls throw KbPackException (status CLOSED). Closing twice is allowed. */
    @Override
    public synchronized void close() {
        if (handle != 0) {
            for (Filter f : new ArrayList<>(filters.keySet())) {
                release(f);
            }
            nClose(handle);
            handle = 0;
        }
    }

    public synchronized boolean isClosed() {
        return handle == 0;
    }

    private long live() {
        if (handle == 0) {
            throw new KbPackException(KbPackException.Status.CLOSED, "", "kbpack: the bundle is closed");
        }
        return handle;
    }

    /** Java-side checks with messages an app developer can act on; the C side checks again. */
    private void checkQuery(Query query) {
        if (query == null) {
            throw argument("search: the query is null");
        }
        if (query.k < 1) {
            throw argument("search: k must be at least 1, not " + query.k);
        }
        if (query.vector != null && query.vector.length != dim) {
            throw argument("search: the query vector has " + query.vector.length + " floats, the bundle's vectors " + dim);
        }
        Mode used = Mode.of(nResolveMode(handle, query.mode.ordinal()));
        if ((used == Mode.DENSE || used == Mode.HYBRID) && query.vector == null) {
            throw argument("search: " + used.name().toLowerCase() + " search needs the query vector (it is null)");
        }
        if ((used == Mode.LEXICAL || used == Mode.HYBRID) && query.question == null) {
            throw argument("search: " + used.name().toLowerCase() + " search needs the question (it is null)");
        }
    }

    private static byte[] utf8(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    private static KbPackException argument(String message) {
        return new KbPackException(KbPackException.Status.ARGUMENT, "", "kbpack: " + message);
    }

    // ---- runtimes/java/src/main/c/kbpack_jni.c; each throws KbPackException on failure
    private static native long nOpenPath(byte[] path);
    private static native long nOpenMemory(ByteBuffer direct, byte[] heap, int offset, int length);
    private static native void nClose(long h);
    private static native void nVerify(long h);
    private static native long nCount(long h);
    private static native int nDim(long h);
    private static native int nFormat(long h);
    private static native byte[] nDtype(long h);
    private static native byte[] nEmbedderName(long h);
    private static native byte[] nManifestJson(long h);
    private static native boolean nHasLexical(long h);
    private static native boolean nBinary(long h);
    private static native int nResolveMode(long h, int mode);
    private static native int nDefaultUnit(long h);
    private static native int nSearch(long h, float[] vector, byte[] question, int k, int mode, long filter,
                                      long[] ids, double[] scores);
    private static native PageHit[] nSearchPages(long h, float[] vector, byte[] question, int k, int mode,
                                                 long filter);
    private static native long nFilterCompile(long h, byte[][] conditions);
    private static native long nFilterMatched(long f);
    private static native boolean nFilterKeeps(long f, long id);
    private static native void nFilterFree(long f);
    private static native Chunk nChunk(long h, long id);
    private static native int nAnswerStrength(long h, float[] vector, long firstId, double[] strength);
    private static native boolean nMinStrength(long h, double[] threshold);
    private static native int nProbeCount(long h);
    private static native Probe nProbe(long h, int i);
    private static native ProbeResult nProbeCheck(long h, float[] vectors, int n);
}
