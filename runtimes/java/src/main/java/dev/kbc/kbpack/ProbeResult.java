package dev.kbc.kbpack;

/** An engine's probe vectors against the bundle's (kbp_probe_check): passed when min >= threshold. */
public final class ProbeResult {
    public final int count;
    public final double threshold, minCosine, meanCosine;
    public final int worst;
    public final boolean passed;
    /** The cosine of each probe, in probe order. */
    public final double[] cosines;

    ProbeResult(int count, double threshold, double minCosine, double meanCosine, int worst, boolean passed,
                double[] cosines) {
        this.count = count;
        this.threshold = threshold;
        this.minCosine = minCosine;
        this.meanCosine = meanCosine;
        this.worst = worst;
        this.passed = passed;
        this.cosines = cosines;
    }
}
