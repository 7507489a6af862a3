package dev.kbc.kbpack;

/**
 * A compiled scoped-search filter (FORMAT.md §2.10; libkbpack's kbp_filter): conditions, all of which
 * a chunk must meet, as `kbc query --where` takes them ("path:manuals/**", "product=x200,x300",
 * "year>=2022"). Made by KbPack.filter, used through Query.filter, reused across questions; it
 * belongs to the KbPack that compiled it and is freed when either is closed.
 */
public final class Filter implements AutoCloseable {
    final KbPack owner;
    long pointer; // libkbpack's kbp_filter *, 0 once freed; guarded by owner's lock

    Filter(KbPack owner, long pointer) {
        this.owner = owner;
        this.pointer = pointer;
    }

    /** How many chunks the filter keeps. */
    public long matched() {
        synchronized (owner) {
            return KbPack.filterMatched(live());
        }
    }

    /** Whether chunk `id` meets every condition. */
    public boolean keeps(long id) {
        synchronized (owner) {
            return KbPack.filterKeeps(live(), id);
        }
    }

    long live() {
        if (pointer == 0) {
            throw new KbPackException(KbPackException.Status.CLOSED, "", "kbpack: the filter is closed");
        }
        return pointer;
    }

    @Override
    public void close() {
        synchronized (owner) {
            owner.release(this);
        }
    }
}
