import dev.kbc.kbpack.Chunk;
import dev.kbc.kbpack.Hit;
import dev.kbc.kbpack.KbPack;
import dev.kbc.kbpack.KbPackException;
import dev.kbc.kbpack.Mode;
import dev.kbc.kbpack.Query;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;

/**
 * Open a bundle, search it, print the best chunk with its source and page.
 *
 *   java -Dkbpack.library=build/libkbpack_jni.so -cp build/kbpack.jar:build/test-classes \
 *       Search kb.kbpack "How do I rotate the logs?" [q.f32]
 *
 * q.f32 is the question embedded as the bundle's embedder embeds it (raw little-endian float32, e.g.
 * from runtimes/python/kbpack_encoder.py kb.kbpack "question" --out q.f32, or an app's own engine);
 * with it the bundle's default mode runs (hybrid when it has a lexical index), without it lexical.
 * tests/test_runtime_java.py runs this file.
 */
public final class Search {
    public static void main(String[] args) throws IOException {
        if (args.length < 2) {
            System.err.println("usage: Search BUNDLE QUESTION [VECTOR.f32]");
            System.exit(2);
        }
        float[] vector = args.length > 2 ? readFloats(args[2]) : null;
        try (KbPack kb = KbPack.open(Paths.get(args[0]))) {
            Query query = Query.of(vector, args[1]).k(3).mode(vector == null ? Mode.LEXICAL : Mode.DEFAULT);
            List<Hit> hits = kb.search(query);
            if (hits.isEmpty()) {
                System.out.println("no match");
                return;
            }
            Chunk best = kb.chunk(hits.get(0).id);
            String page = best.has(Chunk.FIELD_PAGE_START) ? " p. " + best.pageStart : "";
            System.out.printf("%.4f %s%s%n%s%n", hits.get(0).score, best.sourcePath, page, best.text);
        } catch (KbPackException e) { // a damaged bundle, a wrong vector: libkbpack's one line
            System.err.println(args[0] + ": " + e.getMessage());
            System.exit(e.status() == KbPackException.Status.INVALID ? 3 : 2);
        }
    }

    static float[] readFloats(String file) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(Paths.get(file))).order(ByteOrder.LITTLE_ENDIAN);
        float[] v = new float[b.remaining() / 4];
        b.asFloatBuffer().get(v);
        return v;
    }
}
