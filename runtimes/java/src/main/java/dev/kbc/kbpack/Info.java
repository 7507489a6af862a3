package dev.kbc.kbpack;

/** What a bundle holds, from its header and manifest (read at open; no section is hashed). */
public final class Info {
    public final int formatMajor, formatMinor;
    /** Chunks, which is also the number of vectors. */
    public final long count;
    public final int dim;
    /** "float32", "float16" or "int8". */
    public final String dtype;
    /** manifest.embedder.name ("" when absent): the bundle author's text, escape it before printing. */
    public final String embedderName;
    public final boolean hasLexical;
    /** Binary codes (two-stage dense search, format 1.4). */
    public final boolean binary;
    /** The manifest's JSON text, for keys this API does not expose. */
    public final String manifestJson;

    Info(int formatMajor, int formatMinor, long count, int dim, String dtype, String embedderName,
         boolean hasLexical, boolean binary, String manifestJson) {
        this.formatMajor = formatMajor;
        this.formatMinor = formatMinor;
        this.count = count;
        this.dim = dim;
        this.dtype = dtype;
        this.embedderName = embedderName;
        this.hasLexical = hasLexical;
        this.binary = binary;
        this.manifestJson = manifestJson;
    }
}
