package dev.kbc.kbpack;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The JVM side of tests/test_runtime_java.py: one JVM answers every request of a test module (a
 * JVM starts in about half a second; the crafted set is hundreds of bundles). Reads one request a
 * line on stdin, fields separated by tabs, and prints one JSON object a line on stdout:
 *
 *   verify PATH                               {"verdict": "intact"} or {"error": {...}}
 *   info PATH                                 {"count", "dim", "dtype", "format", "embedder", "lexical",
 *                                              "binary", "default_mode", "default_unit", "manifest_bytes"}
 *   search PATH UNIT MODE K VECTOR QUESTION [WHERE HOW]
 *                                             {"hits": [[id, score], ...]} or {"pages": [{...}]};
 *                                             UNIT chunk|page, MODE default|dense|lexical|hybrid, VECTOR a raw
 *                                             little-endian float32 file or "-", QUESTION hex of UTF-8 or "-",
 *                                             WHERE the conditions joined by newlines, in hex, or "-", HOW
 *                                             "where" (Query.where) or "filter" (KbPack.filter, Query.filter)
 *   filter PATH WHERE                         {"matched": m, "kept": [ids the filter keeps]}
 *   chunk PATH ID                             {"text", "context", "source_path", "page_start", ...}
 *   answer PATH VECTOR ID                     {"strength", "confident" (true, false or null), "min_strength"}
 *   probe PATH VECTORS                        kbp_probe_check with n x dim float32 from VECTORS
 *   buffer PATH direct|heap|readonly          opened from a ByteBuffer: {"count", "verdict"}
 *   misuse PATH                               {"cases": [{"case", "thrown", "status", "message"}, ...]}
 *
 * Every KbPackException becomes {"error": {"status", "part", "message"}}; anything else thrown is
 * {"crash": "..."}, which the tests report as a failure of the binding.
 */
public final class Driver {
    private final Map<String, KbPack> open = new HashMap<>();

    public static void main(String[] args) throws IOException {
        Driver d = new Driver();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, false, "UTF-8");
        for (String line; (line = in.readLine()) != null; ) {
            String answer;
            try {
                answer = d.answer(line.split("\t", -1));
            } catch (KbPackException e) {
                answer = "{\"error\": " + error(e) + "}";
            } catch (Throwable e) { // a bug of the binding: reported, the run goes on
                answer = "{\"crash\": " + str(e.toString()) + "}";
            }
            out.println(answer);
            out.flush();
        }
        for (KbPack kb : d.open.values()) {
            kb.close();
        }
    }

    private KbPack bundle(String path) {
        KbPack kb = open.get(path);
        if (kb == null) {
            kb = KbPack.open(Paths.get(path));
            open.put(path, kb);
        }
        return kb;
    }

    private String answer(String[] f) throws IOException {
        switch (f[0]) {
            case "verify": {
                try (KbPack kb = KbPack.open(Paths.get(f[1]))) { // a fresh handle: verify hashes every section
                    kb.verify();
                }
                return "{\"verdict\": \"intact\"}";
            }
            case "info": {
                KbPack kb = bundle(f[1]);
                Info i = kb.info();
                return "{\"count\": " + i.count + ", \"dim\": " + i.dim + ", \"dtype\": " + str(i.dtype)
                        + ", \"format\": [" + i.formatMajor + ", " + i.formatMinor + "], \"embedder\": " + str(i.embedderName)
                        + ", \"lexical\": " + i.hasLexical + ", \"binary\": " + i.binary
                        + ", \"default_mode\": " + str(kb.resolveMode(Mode.DEFAULT).name().toLowerCase())
                        + ", \"default_unit\": " + str(kb.defaultUnit().name().toLowerCase())
                        + ", \"manifest\": " + str(i.manifestJson) + "}";
            }
            case "search": {
                KbPack kb = bundle(f[1]);
                Query q = Query.of(f[5].equals("-") ? null : floats(f[5]), f[6].equals("-") ? null : unhex(f[6]))
                        .k(Integer.parseInt(f[4])).mode(Mode.valueOf(f[3].toUpperCase()));
                if (f.length > 7 && !f[7].equals("-")) {
                    String[] where = unhex(f[7]).split("\n");
                    if (f[8].equals("filter")) {
                        try (Filter scope = kb.filter(where)) {
                            return results(kb, q.filter(scope), f[2]);
                        }
                    }
                    q.where(where);
                }
                return results(kb, q, f[2]);
            }
            case "filter": {
                KbPack kb = bundle(f[1]);
                try (Filter scope = kb.filter(unhex(f[2]).split("\n"))) {
                    StringBuilder s = new StringBuilder("{\"matched\": " + scope.matched() + ", \"kept\": [");
                    String sep = "";
                    for (long id = 0; id < kb.info().count; id++) {
                        if (scope.keeps(id)) {
                            s.append(sep).append(id);
                            sep = ", ";
                        }
                    }
                    return s.append("]}").toString();
                }
            }
            case "chunk": {
                Chunk c = bundle(f[1]).chunk(Long.parseLong(f[2]));
                return "{\"id\": " + c.id + ", \"text\": " + str(c.text) + ", \"context\": " + str(c.context)
                        + ", \"source_path\": " + str(c.sourcePath) + ", \"source\": " + c.source + ", \"seq\": " + c.seq
                        + ", \"page_start\": " + c.pageStart + ", \"page_end\": " + c.pageEnd
                        + ", \"char_start\": " + c.charStart + ", \"char_end\": " + c.charEnd + ", \"tokens\": " + c.tokens
                        + ", \"label_start\": " + str(c.labelStart) + ", \"label_end\": " + str(c.labelEnd)
                        + ", \"record\": " + str(c.record) + ", \"fields\": " + c.fields + "}";
            }
            case "answer": {
                KbPack kb = bundle(f[1]);
                AnswerStrength a = kb.answerStrength(floats(f[2]), Long.parseLong(f[3]));
                java.util.OptionalDouble t = kb.minStrength();
                return "{\"strength\": " + a.strength + ", \"confident\": " + a.confident + ", \"min_strength\": "
                        + (t.isPresent() ? String.valueOf(t.getAsDouble()) : "null") + "}";
            }
            case "probe": {
                KbPack kb = bundle(f[1]);
                float[] flat = floats(f[2]);
                int dim = kb.info().dim, n = flat.length / dim;
                float[][] rows = new float[n][dim];
                for (int i = 0; i < n; i++) {
                    System.arraycopy(flat, i * dim, rows[i], 0, dim);
                }
                List<String> inputs = new ArrayList<>();
                for (int i = 0; i < kb.probeCount(); i++) {
                    inputs.add(str(kb.probe(i).input));
                }
                ProbeResult r = kb.probeCheck(rows);
                return "{\"count\": " + r.count + ", \"passed\": " + r.passed + ", \"min\": " + r.minCosine
                        + ", \"mean\": " + r.meanCosine + ", \"worst\": " + r.worst + ", \"threshold\": " + r.threshold
                        + ", \"inputs\": [" + String.join(", ", inputs) + "]}";
            }
            case "buffer": {
                byte[] bytes = Files.readAllBytes(Paths.get(f[1]));
                ByteBuffer buffer;
                if (f[2].equals("direct")) {
                    buffer = ByteBuffer.allocateDirect(bytes.length);
                    buffer.put(bytes).flip();
                } else if (f[2].equals("heap")) { // at an offset inside a larger array, as an asset slice can be
                    byte[] padded = new byte[bytes.length + 7];
                    System.arraycopy(bytes, 0, padded, 3, bytes.length);
                    buffer = ByteBuffer.wrap(padded, 3, bytes.length).slice();
                } else {
                    buffer = ByteBuffer.wrap(bytes).asReadOnlyBuffer();
                }
                try (KbPack kb = KbPack.open(buffer)) {
                    long count = kb.info().count;
                    kb.verify();
                    return "{\"count\": " + count + ", \"verdict\": \"intact\"}";
                }
            }
            case "misuse":
                return misuse(f[1]);
            default:
                throw new IllegalArgumentException("unknown request " + f[0]);
        }
    }

    private static String results(KbPack kb, Query q, String unit) {
        StringBuilder s = new StringBuilder();
        if (unit.equals("page")) {
            s.append("{\"pages\": [");
            String sep = "";
            for (PageHit p : kb.searchPages(q)) {
                s.append(sep).append("{\"score\": ").append(p.score).append(", \"source\": ").append(p.source)
                        .append(", \"record\": ").append(str(p.record)).append(", \"page\": ").append(p.page)
                        .append(", \"chunks\": ").append(hits(p.chunks)).append('}');
                sep = ", ";
            }
            return s.append("]}").toString();
        }
        return "{\"hits\": " + hits(kb.search(q)) + "}";
    }

    /** Each way of holding the API wrong: each must throw KbPackException, never anything else. */
    private static String misuse(String path) {
        KbPack closed = KbPack.open(Paths.get(path));
        int dim = closed.info().dim;
        closed.close();
        closed.close(); // twice is allowed
        KbPack kb = KbPack.open(Paths.get(path));
        Map<String, Runnable> cases = new java.util.LinkedHashMap<>();
        cases.put("info after close", () -> closed.info());
        cases.put("search after close", () -> closed.search(Query.vector(new float[dim]).mode(Mode.DENSE)));
        cases.put("pages after close", () -> closed.searchPages(Query.vector(new float[dim]).mode(Mode.DENSE)));
        cases.put("chunk after close", () -> closed.chunk(0));
        cases.put("verify after close", closed::verify);
        cases.put("probe after close", () -> closed.probeCount());
        cases.put("answer strength after close", () -> closed.answerStrength(new float[dim], 0));
        cases.put("min strength after close", closed::minStrength);
        cases.put("answer strength of a null vector", () -> kb.answerStrength(null, 0));
        cases.put("answer strength of a short vector", () -> kb.answerStrength(new float[dim - 1], 0));
        cases.put("answer strength of chunk -1", () -> kb.answerStrength(new float[dim], -1));
        cases.put("answer strength of chunk count", () -> kb.answerStrength(new float[dim], kb.info().count));
        cases.put("answer strength of a NaN vector", () -> {
            float[] v = new float[dim];
            v[0] = Float.NaN;
            kb.answerStrength(v, 0);
        });
        cases.put("null vector, dense", () -> kb.search(Query.vector(null).mode(Mode.DENSE)));
        cases.put("null vector, hybrid", () -> kb.search(Query.of(null, "pump").mode(Mode.HYBRID)));
        cases.put("null question, lexical", () -> kb.search(Query.text(null).mode(Mode.LEXICAL)));
        cases.put("short vector", () -> kb.search(Query.vector(new float[dim - 1]).mode(Mode.DENSE)));
        cases.put("long vector", () -> kb.search(Query.vector(new float[dim + 1]).mode(Mode.DENSE)));
        cases.put("empty vector", () -> kb.search(Query.vector(new float[0]).mode(Mode.DENSE)));
        cases.put("k 0", () -> kb.search(Query.vector(new float[dim]).k(0).mode(Mode.DENSE)));
        cases.put("k negative", () -> kb.searchPages(Query.vector(new float[dim]).k(-3).mode(Mode.DENSE)));
        cases.put("null query", () -> kb.search(null));
        cases.put("chunk -1", () -> kb.chunk(-1));
        cases.put("chunk count", () -> kb.chunk(kb.info().count));
        cases.put("probe -1", () -> kb.probe(-1));
        cases.put("probe rows of the wrong size", () -> kb.probeCheck(new float[][] {new float[dim + 1]}));
        cases.put("probe check null", () -> kb.probeCheck(null));
        cases.put("0-byte file", () -> KbPack.open(Paths.get(path + ".empty")));
        cases.put("missing file", () -> KbPack.open(Paths.get(path + ".missing")));
        cases.put("a directory", () -> KbPack.open(Paths.get(path).toAbsolutePath().getParent()));
        cases.put("0-byte heap buffer", () -> KbPack.open(ByteBuffer.allocate(0)));
        cases.put("0-byte direct buffer", () -> KbPack.open(ByteBuffer.allocateDirect(0)));
        cases.put("0-byte array", () -> KbPack.open(new byte[0]));
        cases.put("garbage buffer", () -> KbPack.open(ByteBuffer.allocate(4096).order(ByteOrder.LITTLE_ENDIAN)));
        cases.put("null path", () -> KbPack.open((java.nio.file.Path) null));
        cases.put("null buffer", () -> KbPack.open((ByteBuffer) null));
        Filter closedFilter = kb.filter("kind=pdf");
        closedFilter.close();
        closedFilter.close(); // twice is allowed
        KbPack other = KbPack.open(Paths.get(path));
        Filter foreign = other.filter("kind=pdf");
        cases.put("filter after close", () -> closed.filter("kind=pdf"));
        cases.put("a closed filter's count", closedFilter::matched);
        cases.put("search with a closed filter", () -> kb.search(Query.vector(new float[dim]).mode(Mode.DENSE).filter(closedFilter)));
        cases.put("search with another KbPack's filter", () -> kb.search(Query.vector(new float[dim]).mode(Mode.DENSE).filter(foreign)));
        cases.put("a filter of an unknown key", () -> kb.filter("no_such_key=1"));
        cases.put("a filter with a bad operator", () -> kb.filter("kind~pdf"));
        cases.put("a filter of no condition", () -> kb.filter());
        cases.put("a null condition", () -> kb.filter((String) null));
        cases.put("where with an unknown key", () -> kb.search(Query.vector(new float[dim]).mode(Mode.DENSE).where("nope=1")));
        long foreignPointer = foreign.pointer; // read now: the case runs before `other` is closed
        cases.put("natives: another handle's filter", () -> invoke("nSearch", handleOf(kb), new float[dim], null, 5, 1,
                foreignPointer, new long[5], new double[5]));
        cases.put("a filter whose KbPack is closed", () -> {
            other.close(); // frees `foreign` first
            foreign.matched();
        });
        // the natives called as reflection (or a bug in KbPack) could, past the Java side's checks
        long h = handleOf(kb);
        cases.put("natives: search on handle 0", () -> invoke("nSearch", 0L, new float[dim], null, 5, 1, 0L,
                new long[5], new double[5]));
        cases.put("natives: a short vector", () -> invoke("nSearch", h, new float[dim - 1], null, 5, 1, 0L,
                new long[5], new double[5]));
        cases.put("natives: k 0", () -> invoke("nSearch", h, new float[dim], null, 0, 1, 0L, new long[1], new double[1]));
        cases.put("natives: no room for k", () -> invoke("nSearch", h, new float[dim], null, 5, 1, 0L, new long[1],
                new double[1]));
        cases.put("natives: a bad mode", () -> invoke("nSearch", h, new float[dim], null, 5, 9, 0L, new long[5],
                new double[5]));
        cases.put("natives: chunk -1", () -> invoke("nChunk", h, -1L));
        cases.put("natives: pages on handle 0", () -> invoke("nSearchPages", 0L, new float[dim], null, 5, 1, 0L));
        cases.put("natives: probe check of the wrong length", () -> invoke("nProbeCheck", h, new float[dim + 1], 1));
        cases.put("natives: answer strength on handle 0", () -> invoke("nAnswerStrength", 0L, new float[dim], 0L,
                new double[1]));
        cases.put("natives: answer strength of a short vector", () -> invoke("nAnswerStrength", h, new float[dim - 1], 0L,
                new double[1]));
        cases.put("natives: answer strength of chunk -1", () -> invoke("nAnswerStrength", h, new float[dim], -1L,
                new double[1]));
        cases.put("natives: answer strength past the last chunk", () -> invoke("nAnswerStrength", h, new float[dim],
                Long.MAX_VALUE, new double[1]));
        cases.put("natives: answer strength with no room", () -> invoke("nAnswerStrength", h, new float[dim], 0L,
                new double[0]));
        cases.put("natives: min strength on handle 0", () -> invoke("nMinStrength", 0L, new double[1]));
        cases.put("natives: min strength with no room", () -> invoke("nMinStrength", h, (Object) null));
        StringBuilder s = new StringBuilder("{\"cases\": [");
        String sep = "";
        for (Map.Entry<String, Runnable> c : cases.entrySet()) {
            String thrown = "nothing", status = "", message = "";
            try {
                c.getValue().run();
            } catch (KbPackException e) {
                thrown = "KbPackException";
                status = e.status().name();
                message = e.getMessage();
            } catch (Throwable e) {
                thrown = e.getClass().getName();
                message = String.valueOf(e.getMessage());
            }
            s.append(sep).append("{\"case\": ").append(str(c.getKey())).append(", \"thrown\": ").append(str(thrown))
                    .append(", \"status\": ").append(str(status)).append(", \"message\": ").append(str(message)).append('}');
            sep = ", ";
        }
        kb.close();
        return s.append("]}").toString();
    }

    private static long handleOf(KbPack kb) {
        try {
            java.lang.reflect.Field f = KbPack.class.getDeclaredField("handle");
            f.setAccessible(true);
            return f.getLong(kb);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    /** KbPack's private static native `name`, its KbPackException rethrown as itself. */
    private static void invoke(String name, Object... args) {
        for (java.lang.reflect.Method m : KbPack.class.getDeclaredMethods()) {
            if (m.getName().equals(name)) {
                m.setAccessible(true);
                try {
                    m.invoke(null, args);
                } catch (java.lang.reflect.InvocationTargetException e) {
                    if (e.getCause() instanceof RuntimeException) {
                        throw (RuntimeException) e.getCause();
                    }
                    throw new IllegalStateException(e.getCause());
                } catch (IllegalAccessException e) {
                    throw new IllegalStateException(e);
                }
                return;
            }
        }
        throw new IllegalStateException("no native " + name);
    }

    private static String hits(List<Hit> hits) {
        StringBuilder s = new StringBuilder("[");
        String sep = "";
        for (Hit h : hits) {
            s.append(sep).append('[').append(h.id).append(", ").append(h.score).append(']');
            sep = ", ";
        }
        return s.append(']').toString();
    }

    private static String error(KbPackException e) {
        return "{\"status\": " + str(e.status().name()) + ", \"part\": " + str(e.part()) + ", \"message\": "
                + str(e.getMessage()) + "}";
    }

    static float[] floats(String file) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(Paths.get(file))).order(ByteOrder.LITTLE_ENDIAN);
        float[] v = new float[b.remaining() / 4];
        b.asFloatBuffer().get(v);
        return v;
    }

    private static String unhex(String hex) {
        byte[] b = new byte[hex.length() / 2];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
        }
        return new String(b, StandardCharsets.UTF_8);
    }

    /** A JSON string (null as null); every character outside printable ASCII escaped. */
    static String str(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
