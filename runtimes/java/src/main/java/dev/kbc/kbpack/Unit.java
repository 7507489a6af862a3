package dev.kbc.kbpack;

/** What a search returns, libkbpack's kbp_unit: chunks, or pages each with its best chunks. */
public enum Unit {
    DEFAULT, CHUNK, PAGE;

    static Unit of(int code) {
        return values()[code];
    }
}
