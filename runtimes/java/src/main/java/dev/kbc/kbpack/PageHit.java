package dev.kbc.kbpack;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** One ranked page (FORMAT.md §2.8): its score, its key (source, record, page) and best chunks. */
public final class PageHit {
    public final double score;
    /** Index into the manifest's sources (0 when the chunks have none). */
    public final long source;
    /** The record id of JSONL corpora, or null. */
    public final String record;
    /** The 1-based physical page (0 when the chunks have none). */
    public final long page;
    /** The page's best chunks, best first. */
    public final List<Hit> chunks;

    PageHit(double score, long source, byte[] record, long page, long[] ids, double[] scores) {
        this.score = score;
        this.source = source;
        this.record = Chunk.text(record);
        this.page = page;
        List<Hit> hits = new ArrayList<>(ids.length);
        for (int i = 0; i < ids.length; i++) {
            hits.add(new Hit(ids[i], scores[i]));
        }
        this.chunks = Collections.unmodifiableList(hits);
    }
}
