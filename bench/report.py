"""Scenarios, targets, the table and the chart, from the raw samples that
bench/run.py collected. Every ratio is median(B) / median(A) of the samples
stored next to it in bench.json, so a reader can recompute it."""

from __future__ import annotations

import statistics

from harness import describe

# The targets of issue #6. kind "ratio": median(B)/median(A) <= limit;
# "b_max": median(B) <= limit (in the scenario's unit); "extra": median(B) -
# median(A) <= limit.
TINY_RUN = 0.15
TINY_FLOOR = 1.15
NOOP = 2.0
SECOND_RUN = 1.1
START = 1.2
PER_TEST = 1.0
TINY_DIRTY_MB = 20.0
HEAVY_SHARE = 0.10  # of the cold run's time outside tests
GC_SHARE = 0.10  # of the zygote's RSS
HOOK = 2.0  # issue #13: pytest through the start hook vs pytest-zygote run
XDIST_COLD = 0.5  # issue #14: run -n 2 vs cold -n 2 (large, cpu)
XDIST_WARM = 0.75  # issue #14: run -n 2 vs a single warm run (large, cpu)
MONO_CPU = 1.10  # issue #18: a warm run's child CPU, vs the same on the 100-module monorepo
MONO_CORE = 2.0  # issue #18: the first run after editing core vs a cold run (monorepo10k)
FIRST = 1.5  # issue #18: the first run after start vs a warm run (tiny, heavy)
BACK_TO_BACK = 1.5  # issue #18: runs back to back vs a warm run (tiny)
LARGE_RUN = 0.7  # issue #18: a warm run of the 5,000-test project (collected ahead) vs cold
MOONSHOT = 0.015  # issue #18: the tiny warm run's wall time it aims at (a row, not a target)


def _per_test(seconds, tests):
    return [s / tests * 1e6 for s in seconds] if tests else []


def _mb(kbs):
    return [k / 1024.0 for k in kbs if k is not None]


def scenarios(result: dict) -> list:
    out = []
    for name, p in result["projects"].items():
        s = p["samples"]
        n = p["tests"]

        def add(sid, title, unit, a_label, a, b_label, b, target=None):
            if not b:
                return  # not measured for this project
            out.append(_scenario(name, sid, title, unit, a_label, a, b_label, b, target))

        add("start", "start to ready", "s", "cold --collect-only", s.get("collect_cold"),
            "pytest-zygote start", s.get("start"),
            {"kind": "ratio", "limit": START, "text": "<= %.2fx" % START})
        run_target = None
        if name == "tiny":
            run_target = {"kind": "ratio", "limit": TINY_RUN, "text": "<= %.2fx" % TINY_RUN}
        elif name == "heavy":
            run_target = _heavy_target(s)
        elif name == "large":
            run_target = {"kind": "ratio", "limit": LARGE_RUN, "text": "<= %.2fx" % LARGE_RUN}
        add("run", "warm run vs cold", "s", "cold pytest -q", s.get("cold"),
            "pytest-zygote run -q", s.get("warm"), run_target)
        add("first", "first run after start", "s", "warm run", s.get("warm"),
            "first run after start", s.get("first"),
            {"kind": "ratio", "limit": FIRST, "text": "<= %.2fx" % FIRST}
            if name in ("tiny", "heavy") else None)
        add("second", "2nd run after start", "s", "warm run", s.get("warm"),
            "2nd run after start", s.get("second"))
        add("back_to_back", "runs back to back", "s", "warm run", s.get("warm"),
            "back-to-back run", s.get("back_to_back"),
            {"kind": "ratio", "limit": BACK_TO_BACK, "text": "<= %.2fx" % BACK_TO_BACK}
            if name == "tiny" else None)
        if s.get("floor"):
            add("floor", "vs in-process floor", "s", "pytest.main() again", s.get("floor"),
                "pytest-zygote run -q", s.get("warm"),
                {"kind": "ratio", "limit": TINY_FLOOR, "text": "<= %.2fx" % TINY_FLOOR}
                if name == "tiny" else None)
        if name == "tiny":
            # Issue #18's moonshot: no target yet; where the time goes is in
            # docs/benchmarks.md.
            add("moonshot", "warm run vs 15 ms (moonshot)", "s", "the moonshot", [MOONSHOT],
                "pytest-zygote run -q", s.get("warm"))
        add("handover", "plugin hand-over", "s", "pytest-zygote run -q", s.get("warm"),
            "pytest -p plugin -q", s.get("handover"))
        add("hook", "hand-over by start hook", "s", "pytest-zygote run -q", s.get("warm"),
            "python3 -m pytest (hook)", s.get("hook"),
            {"kind": "ratio", "limit": HOOK, "text": "<= %.2fx" % HOOK}
            if name == "tiny" else None)
        for kind in ("leaf", "core"):
            add("%s_first" % kind, "1st run after %s edit" % kind, "s", "warm run",
                s.get("warm_edit"), "1st run after edit", s.get("%s_first" % kind))
            add("%s_second" % kind, "2nd run after %s edit" % kind, "s", "warm run",
                s.get("warm_edit"), "2nd run after edit", s.get("%s_second" % kind),
                {"kind": "ratio", "limit": SECOND_RUN, "text": "<= %.2fx" % SECOND_RUN})
        add("watch", "watch: save to result", "s", "settle + warm run",
            s.get("watch_ref"), "pytest-zygote watch", s.get("watch_save"))
        add("per_test", "test time per test", "us", "cold",
            _per_test(s.get("runtest_cold", []), n), "zygote child",
            _per_test(s.get("runtest_warm", []), n),
            {"kind": "ratio", "limit": PER_TEST, "text": "<= %.2fx" % PER_TEST}
            if name == "large" else None)
        add("cpu", "CPU time of a run", "s", "cold process", s.get("cpu_cold"),
            "zygote child", s.get("cpu_warm"))
        for n in range(1, 65):
            if not s.get("xdist_warm_n%d" % n):
                break
            targeted = name in ("large", "cpu") and n == 2
            add("xdist_n%d" % n, "parallel -n %d vs cold" % n, "s", "cold pytest -n %d" % n,
                s.get("xdist_cold_n%d" % n), "run -n %d" % n, s.get("xdist_warm_n%d" % n),
                {"kind": "ratio", "limit": XDIST_COLD, "text": "<= %.2fx" % XDIST_COLD}
                if targeted else None)
            add("xdist_n%d_warm" % n, "parallel -n %d vs one warm" % n, "s", "pytest-zygote run",
                s.get("warm"), "run -n %d" % n, s.get("xdist_warm_n%d" % n),
                {"kind": "ratio", "limit": XDIST_WARM, "text": "<= %.2fx" % XDIST_WARM}
                if targeted else None)
        add("noop", "no-op round trip", "s", "/bin/true", s.get("true"),
            "pytest-zygote status", s.get("status"),
            {"kind": "ratio", "limit": NOOP, "text": "<= %.2fx" % NOOP})
        add("noop_exec", "client exec only", "s", "/bin/true", s.get("true"),
            "pytest-zygote --version", s.get("version"))
        add("dirty", "private dirty", "MB", "cold process", _mb(s.get("dirty_cold_kb", [])),
            "zygote child", _mb(s.get("dirty_warm_kb", [])),
            {"kind": "b_max", "limit": TINY_DIRTY_MB, "text": "B <= %g MB" % TINY_DIRTY_MB}
            if name == "tiny" else None)
        if s.get("dirty_gc_kb"):
            rss = _mb(s.get("zygote_rss_kb", []))
            limit = GC_SHARE * statistics.median(rss) if rss else None
            add("gc", "test calls gc.collect()", "MB", "child", _mb(s.get("dirty_warm_kb", [])),
                "child + gc.collect()", _mb(s.get("dirty_gc_kb", [])),
                {"kind": "extra", "limit": limit,
                 "text": "+<= %.1f MB" % limit} if limit else None)
        add("rss", "zygote RSS", "MB", "cold pytest", _mb(s.get("rss_cold_kb", [])),
            "zygote", _mb(s.get("zygote_rss_kb", [])))
        if s.get("child_cpu_ms"):
            add("core_first_cold", "1st run after core edit vs cold", "s", "cold pytest -q",
                s.get("cold"), "1st run after edit", s.get("core_first"),
                {"kind": "ratio", "limit": MONO_CORE, "text": "<= %.2fx" % MONO_CORE}
                if name == "monorepo10k" else None)
            base = result["projects"].get("monorepo100", {}).get("samples", {})
            add("child_cpu", "child CPU, one-file run", "ms", "monorepo100",
                base.get("child_cpu_ms") if name != "monorepo100" else None,
                "this project", s.get("child_cpu_ms"),
                {"kind": "ratio", "limit": MONO_CPU, "text": "<= %.2fx" % MONO_CPU}
                if name != "monorepo100" and base.get("child_cpu_ms") else None)
    return out


def _heavy_target(s: dict):
    """warm <= the test time + 10% of the cold run's time outside tests, as a
    ratio to the cold median: (Tc + 0.1 (C - Tc)) / C. The test time is the
    cold run's: tests that run slower in a zygote child count as overhead."""
    cold, tc = s.get("cold"), s.get("runtest_cold")
    if not (cold and tc):
        return None
    c, tc = statistics.median(cold), statistics.median(tc)
    limit = (tc + HEAVY_SHARE * (c - tc)) / c
    return {"kind": "ratio", "limit": limit, "text": "<= %.2fx (*)" % limit,
            "derivation": {"cold_s": c, "test_time_s": tc, "share": HEAVY_SHARE}}


def _scenario(project, sid, title, unit, a_label, a, b_label, b, target):
    a = [x for x in (a or []) if x is not None]
    b = [x for x in (b or []) if x is not None]
    da, db = describe(a), describe(b)
    ratio = db["median"] / da["median"] if da and db and da["median"] > 0 else None
    res = None
    if target and db and (target["kind"] == "b_max" or da):
        if target["kind"] == "ratio":
            res = ratio is not None and ratio <= target["limit"]
        elif target["kind"] == "b_max":
            res = db["median"] <= target["limit"]
        elif target["kind"] == "extra":
            res = db["median"] - da["median"] <= target["limit"]
        res = "pass" if res else "miss"
    return {"project": project, "id": sid, "title": title, "unit": unit,
            "a_label": a_label, "a": a, "a_stats": da, "b_label": b_label, "b": b,
            "b_stats": db, "ratio": ratio, "target": target, "result": res}


def _fmt(x, unit):
    if x is None:
        return "-"
    if unit == "s":
        if x >= 1:
            return "%.2f s" % x
        return "%.1f ms" % (x * 1e3) if x < 0.1 else "%.0f ms" % (x * 1e3)
    if unit == "us":
        return "%.0f us" % x
    if unit == "ms":
        return "%.1f ms" % x
    return "%.1f MB" % x


def table(result: dict) -> str:
    head = ("project", "scenario", "A", "median", "IQR", "B", "median", "IQR", "B/A",
            "target", "result")
    rows = []
    for sc in result["scenarios"]:
        da, db, u = sc["a_stats"], sc["b_stats"], sc["unit"]
        rows.append((
            sc["project"], sc["title"], sc["a_label"] or "",
            _fmt(da["median"], u) if da else "-", _fmt(da["iqr"], u) if da else "",
            sc["b_label"], _fmt(db["median"], u) if db else "-",
            _fmt(db["iqr"], u) if db else "",
            "%.2fx" % sc["ratio"] if sc["ratio"] is not None else "-",
            sc["target"]["text"] if sc["target"] else "",
            sc["result"] or "",
        ))
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    right = {3, 4, 6, 7, 8}

    def line(r):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            out.append("")
        prev = r[0]
        out.append(line(r))
    passed = sum(1 for sc in result["scenarios"] if sc["result"] == "pass")
    missed = [sc for sc in result["scenarios"] if sc["result"] == "miss"]
    out.append("")
    out.append("targets: %d pass, %d miss%s" % (passed, len(missed), (": " + ", ".join(
        "%s %s" % (m["project"], m["id"]) for m in missed)) if missed else ""))
    for name, p in result["projects"].items():
        f = dict(p["fidelity"])
        f.setdefault("warning_diffs", [])
        out.append("fidelity: %s: %d of %d checked warm runs ended as the cold run did%s"
                   % (name, f["checked"] - len(f["mismatches"]), f["checked"],
                      "; %d of them with another number of warnings (%s vs %s cold)"
                      % (len(f["warning_diffs"]), f["warning_diffs"][0]["summary"],
                         f["warning_diffs"][0]["cold_summary"]) if f["warning_diffs"] else ""))
    if any(sc["target"] and "derivation" in sc["target"] for sc in result["scenarios"]):
        out.append("(*) test time + %d%% of the cold run's time outside tests, as a ratio "
                   "to the cold run (docs/benchmarks.md)" % round(HEAVY_SHARE * 100))
    m = result["meta"]
    out.append("%s, %d round(s) (large at most 3), %s CPUs, load %s -> %s, %.0f s"
               % (m["bin_version"], m["rounds"], m["cpus"],
                  _load(m.get("loadavg_start")), _load(m.get("loadavg_end")),
                  m.get("elapsed_s", 0)))
    return "\n".join(out)


def _load(x):
    return "%.1f" % x[0] if x else "?"


def chart(result: dict, path):
    """A PNG: per project, A and B medians (IQR as error bars) of every time
    scenario on a log scale, and the memory scenarios; B is green where it
    meets its target, red where it misses, grey where there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(result["projects"])
    fig, axes = plt.subplots(len(names), 2, figsize=(14, 3.2 + 3.0 * len(names)),
                             gridspec_kw={"width_ratios": [3, 1]}, squeeze=False)
    colours = {"pass": "#2ca02c", "miss": "#d62728", None: "#7f7f7f"}
    for row, name in enumerate(names):
        scs = [sc for sc in result["scenarios"] if sc["project"] == name]
        for col, units in ((0, ("s", "us")), (1, ("MB",))):
            ax = axes[row][col]
            mine = [sc for sc in scs if sc["unit"] in units and sc["b_stats"]]
            ys = range(len(mine))
            for y, sc in zip(ys, mine):
                scale = 1e3 if sc["unit"] == "s" else (1e-3 if sc["unit"] == "us" else 1)
                for off, st, colour in ((-0.2, sc["a_stats"], "#1f77b4"),
                                        (0.2, sc["b_stats"], colours[sc["result"]])):
                    if not st:
                        continue
                    med = st["median"] * scale
                    err = [[med - st["q1"] * scale], [st["q3"] * scale - med]]
                    ax.barh(y + off, med, height=0.38, color=colour, xerr=err,
                            error_kw={"elinewidth": 0.8, "capsize": 2})
                if sc["ratio"] is not None:
                    ax.annotate("%.2fx" % sc["ratio"], (sc["b_stats"]["q3"] * scale, y + 0.2),
                                xytext=(4, -3), textcoords="offset points", fontsize=7)
            ax.set_yticks(list(ys))
            ax.set_yticklabels(["%s\n%s / %s" % (sc["title"], sc["a_label"] or "-",
                                                 sc["b_label"]) for sc in mine], fontsize=7)
            ax.invert_yaxis()
            if col == 0:
                ax.set_xscale("log")
                ax.set_xlabel("ms (log scale)", fontsize=8)
                ax.set_title("%s (%s tests): blue A, B green/red/grey = pass/miss/no target"
                             % (name, result["projects"][name]["tests"]), fontsize=9)
            else:
                ax.set_xlabel("MB", fontsize=8)
                ax.set_title("%s: memory" % name, fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
            ax.grid(axis="x", alpha=0.3)
    m = result["meta"]
    fig.suptitle("pytest-zygote benchmark, %s, %d round(s), load %s" % (
        m["date"], m["rounds"], _load(m.get("loadavg_start"))), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
