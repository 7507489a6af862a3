package dev.kbc.kbpack;

import java.io.IOException;
import java.nio.file.Paths;
import java.util.Arrays;

/**
 * One dense search after another through the binding, timed inside the JVM (runtimes/java/bench.py
 * runs it beside bench/c_vectors.py's C driver on the same bundle and queries):
 *   Bench BUNDLE QUERIES.f32 N K [MODE] -> open_ms, first_ms, median_ms, p90_ms, min_ms, checksum
 * Every query is timed once, after a warm-up pass over all of them, so that the JIT has compiled the
 * binding's Java side; the C driver has no such pass to need.
 */
public final class Bench {
    public static void main(String[] args) throws IOException {
        int n = Integer.parseInt(args[2]), k = Integer.parseInt(args[3]);
        Mode mode = args.length > 4 ? Mode.valueOf(args[4].toUpperCase()) : Mode.DENSE;
        float[] all = Driver.floats(args[1]);
        long t0 = System.nanoTime();
        try (KbPack kb = KbPack.open(Paths.get(args[0]))) {
            double open = (System.nanoTime() - t0) / 1e6;
            int dim = kb.info().dim;
            float[][] queries = new float[n][];
            for (int i = 0; i < n; i++) {
                queries[i] = Arrays.copyOfRange(all, i * dim, (i + 1) * dim);
            }
            t0 = System.nanoTime();
            kb.search(Query.vector(queries[0]).k(k).mode(mode));
            double first = (System.nanoTime() - t0) / 1e6;
            double checksum = 0;
            for (float[] q : queries) { // warm-up: the JIT compiles KbPack's Java side
                checksum += kb.search(Query.vector(q).k(k).mode(mode)).get(0).score;
            }
            double[] ms = new double[n];
            checksum = 0;
            for (int i = 0; i < n; i++) {
                t0 = System.nanoTime();
                checksum += kb.search(Query.vector(queries[i]).k(k).mode(mode)).get(0).score;
                ms[i] = (System.nanoTime() - t0) / 1e6;
            }
            Arrays.sort(ms);
            System.out.printf("open_ms %.3f%nfirst_ms %.3f%nmedian_ms %.4f%np90_ms %.4f%nmin_ms %.4f%nchecksum %.6f%n",
                    open, first, ms[n / 2], ms[n * 9 / 10], ms[0], checksum);
        }
    }
}
