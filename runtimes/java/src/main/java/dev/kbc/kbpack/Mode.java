package dev.kbc.kbpack;

/** Search modes, libkbpack's kbp_mode: DEFAULT is the manifest's retrieval.default_mode. */
public enum Mode {
    DEFAULT, DENSE, LEXICAL, HYBRID;

    static Mode of(int code) {
        return values()[code];
    }
}
