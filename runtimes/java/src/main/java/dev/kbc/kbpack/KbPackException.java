package dev.kbc.kbpack;

import java.nio.charset.StandardCharsets;

/**
 * Every failure of this binding: libkbpack's status, the damaged part of the bundle ("header",
 * "table", a section name, "file"; "" when it is not the bundle's fault) and its one-line message
 * ("chunks: block 3 cannot be decoded: ..."). Unchecked, so Kotlin and lambdas need no ceremony.
 */
public final class KbPackException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** libkbpack's kbp_status values; CLOSED is this binding's: a handle used after close(). */
    public enum Status {
        OK(0), IO(1), INVALID(2), ARGUMENT(3), NOT_PRESENT(4), MEMORY(5), CLOSED(-1);

        final int code;

        Status(int code) {
            this.code = code;
        }

        /** The status libkbpack returned as this number (an unknown number reads as INVALID). */
        public static Status of(int code) {
            for (Status s : values()) {
                if (s.code == code) {
                    return s;
                }
            }
            return INVALID;
        }

        public int code() {
            return code;
        }
    }

    private final Status status;
    private final String part;

    public KbPackException(Status status, String part, String message) {
        super(message);
        this.status = status;
        this.part = part == null ? "" : part;
    }

    /** Built by the JNI glue: libkbpack's message and part are bytes from the bundle (UTF-8 or not). */
    static KbPackException fromNative(int status, byte[] part, byte[] message) {
        return new KbPackException(Status.of(status), new String(part, StandardCharsets.UTF_8),
                new String(message, StandardCharsets.UTF_8));
    }

    public Status status() {
        return status;
    }

    /** The damaged part of the bundle, or "" when the failure is not the bundle's. */
    public String part() {
        return part;
    }
}
