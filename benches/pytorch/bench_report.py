"""What the PyTorch benchmark scripts share: the JSON record of a workload (the layout of
`genflow bench --json`), the process's peak memory, and the table printed without --json."""
import resource
import statistics


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summary(name, samples, rss_before, **extra):
    """The JSON record of a workload from its (wall ms, cpu ms) samples."""
    wall = [w for w, _ in samples]
    out = {
        "name": name,
        "unit": "ms",
        "median": statistics.median(wall),
        "min": min(wall),
        "max": max(wall),
        "samples": len(wall),
        "cpu_median": statistics.median(c for _, c in samples),
        "peak_rss_mb": peak_rss_mb(),
        "rss_increase_mb": peak_rss_mb() - rss_before,
    }
    out.update(extra)
    return out


def print_table(title, results):
    """The human-readable form of a report's workloads."""
    print(title)
    for r in results:
        if "skipped" in r:
            print(f"  {r['name']:<22} skipped: {r['skipped']}")
            continue
        print(f"  {r['name']:<22} median {r['median']:9.2f} ms  min {r['min']:9.2f}  "
              f"max {r['max']:9.2f}  cpu {r['cpu_median']:9.2f}  peak RSS {r['peak_rss_mb']:7.1f} MB")
