package dev.kbc.kbpack;

/**
 * How strongly the bundle answers a question (KbPack.answerStrength, kbp_answer_strength, FORMAT.md
 * §2.11): the inner product of the question's vector with its first hit's stored vector (the cosine
 * for kbc's normalised embedders), one meaning across questions where a hybrid score is about 1 for
 * the best of nothing.
 */
public final class AnswerStrength {
    public final double strength;
    /**
     * FALSE under the bundle's threshold (manifest retrieval.min_strength): "no confident answer", the
     * bundle may have nothing on this, the hits are still the best there are; TRUE at or above it; null
     * when the bundle records no threshold (built with another embedder than kbc's default and no
     * --min-score).
     */
    public final Boolean confident;

    AnswerStrength(double strength, Boolean confident) {
        this.strength = strength;
        this.confident = confident;
    }

    @Override
    public String toString() {
        return "AnswerStrength(" + strength + ", " + confident + ")";
    }
}
