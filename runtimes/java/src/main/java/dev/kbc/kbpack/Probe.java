package dev.kbc.kbpack;

/** A probe: the exact text an engine must embed (prompt included), as it embeds a question. */
public final class Probe {
    public final String kind;
    public final String input;

    Probe(byte[] kind, byte[] input) {
        this.kind = Chunk.text(kind);
        this.input = Chunk.text(input);
    }
}
