package dev.kbc.kbpack;

import java.nio.charset.StandardCharsets;

/**
 * A chunk and its provenance (libkbpack's kbp_chunk). Strings the chunk lacks are null; integer
 * fields it lacks read 0 (has(FIELD_...) says which are present).
 */
public final class Chunk {
    public static final int FIELD_SOURCE = 1, FIELD_SEQ = 2, FIELD_PAGE_START = 4, FIELD_PAGE_END = 8,
            FIELD_CHAR_START = 16, FIELD_CHAR_END = 32, FIELD_TOKENS = 64;

    public final long id;
    /** What was embedded, without any prompt. */
    public final String text;
    /** What the chunk cannot say about itself (title, path words), or null. */
    public final String context;
    /** The source document's path ("?" when the chunk names none). */
    public final String sourcePath;
    public final long source, seq, pageStart, pageEnd, charStart, charEnd, tokens;
    /** The document's own page labels ("iv"), or null. */
    public final String labelStart, labelEnd;
    /** The record id of JSONL corpora, or null. */
    public final String record;
    public final int fields;

    Chunk(long id, byte[] text, byte[] context, byte[] sourcePath, long source, long seq, long pageStart,
          long pageEnd, long charStart, long charEnd, long tokens, byte[] labelStart, byte[] labelEnd,
          byte[] record, int fields) {
        this.id = id;
        this.text = text(text);
        this.context = text(context);
        this.sourcePath = text(sourcePath);
        this.source = source;
        this.seq = seq;
        this.pageStart = pageStart;
        this.pageEnd = pageEnd;
        this.charStart = charStart;
        this.charEnd = charEnd;
        this.tokens = tokens;
        this.labelStart = text(labelStart);
        this.labelEnd = text(labelEnd);
        this.record = text(record);
        this.fields = fields;
    }

    public boolean has(int field) {
        return (fields & field) != 0;
    }

    /** libkbpack hands out UTF-8 bytes (which may hold NULs): decoded here, not by JNI's modified UTF-8. */
    static String text(byte[] utf8) {
        return utf8 == null ? null : new String(utf8, StandardCharsets.UTF_8);
    }
}
