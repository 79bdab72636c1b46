"""The benchmark report: a markdown document built from the rows the
measuring modules return, printed and optionally written to a file."""

import datetime
import sys


def table(header, rows):
    """A markdown table: `header` cells, then one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def interval(bounds):
    """(low, high) -> "0.93–1.07"."""
    return "{:.2f}–{:.2f}".format(*bounds)


def configuration(machine):
    """"oneDNN on (this CPU's default)" or with the switch that set it."""
    switch = machine["onednn_switch"]
    how = "this CPU's default" if switch is None else f"TF_ENABLE_ONEDNN_OPTS={switch}"
    return f"oneDNN {'on' if machine['onednn'] else 'off'} ({how})"


def header(machine, command, seconds, bandwidth=None):
    """The report's title, machine, command and (when measured) copy bandwidth."""
    lines = [
        "# kbn vs Keras batch norm: benchmark",
        "",
        f"Machine: {machine['cpu']} ({machine['vector_extensions']}), {machine['cores']} logical "
        f"cores, {machine['ram_gib']:.0f} GiB RAM, {machine['gpus']} GPU(s); Python "
        f"{machine['python']}, TensorFlow {machine['tensorflow']} with "
        f"{configuration(machine)}, Keras {machine['keras']}, kbn {machine['kbn']}, "
        f"KBN_PATH={machine['kbn_path']}.",
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {seconds:.0f} s). "
        "Method: the docstrings of `benchmarks/timing.py` and `benchmarks/intervals.py`; "
        "floor: `benchmarks/layer_steps.py`; memory: `benchmarks/memory_probe.py`.",
    ]
    if bandwidth is not None:
        lines += [
            "",
            f"Copy bandwidth (bytes read + written): {max(bandwidth.values()):.1f} GB/s "
            f"(NumPy copy, 1 thread: {bandwidth['numpy']:.1f}; TensorFlow negation, all threads: "
            f"{bandwidth['tensorflow']:.1f}).",
        ]
    return lines


def layer_section(rows):
    """The training-step and inference table of `benchmarks.layer_steps`."""
    return [
        "## Layer: training step and inference forward",
        "",
        "Medians; ratio < 1 means kbn is faster. Floor: 8 tensor passes for a training step, "
        "2 for inference; \"× floor\" = time / (floor bytes / copy bandwidth). "
        "Spread: interquartile range / median (the largest of the layers timed). "
        "Paired 95% CI: confidence interval of the median per-round kbn/Keras ratio; "
        "A/A 95% CI: the same for a second Keras layer against the first, the resolution "
        "of this measurement (a kbn interval overlapping it is a tie). Targets: issue 14, "
        "the same in both CPU configurations (oneDNN on and off).",
        "",
        table(
            ["shape", "elements", "mode", "XLA", "kbn path", "Keras ms", "kbn ms", "kbn/Keras",
             "paired 95% CI", "A/A 95% CI", "vs A/A", "target", "met", "kbn GB/s",
             "kbn × floor", "Keras × floor", "runs", "spread"],
            [[r["shape"], f"{r['elements']:,}", r["mode"], "yes" if r["xla"] else "no", r["path"],
              f"{r['keras_ms']:.2f}", f"{r['kbn_ms']:.2f}", f"{r['ratio']:.2f}",
              interval(r["ci"]), interval(r["aa_ci"]), r["verdict"], r["target"], r["met"],
              f"{r['kbn_gbps']:.1f}",
              f"{r['kbn_x_floor']:.1f}", f"{r['keras_x_floor']:.1f}",
              r["reps"], f"{100 * r['spread']:.0f}%"] for r in rows],
        ),
    ]


def fit_section(rows, skipped="Skipped (--skip-fit)."):
    """The `model.fit` epoch table of `benchmarks.fit_epochs`; `skipped` when `rows` is empty."""
    lines = [
        "## `model.fit` epochs (digits, batch 60)",
        "",
        "Medians over every timed epoch; the confidence intervals pair the rounds (each "
        "round: every model fits a few epochs; its median epoch counts), as above.",
        "",
    ]
    if not rows:
        return lines + [skipped]
    return lines + [table(
        ["model", "epochs timed", "jit_compile", "Keras s/epoch", "kbn s/epoch", "kbn/Keras",
         "paired 95% CI", "A/A 95% CI", "no-BN s/epoch", "BN share of Keras epoch",
         "lowest possible kbn/Keras"],
        [[r["model"], r["epochs"], r["jit_compile"], f"{r['keras_s']:.3f}", f"{r['kbn_s']:.3f}",
          f"{r['ratio']:.2f}", interval(r["ci"]), interval(r["aa_ci"]),
          f"{r['none_s']:.3f}",
          f"{100 * r['bn_share']:.0f}%", f"{1 - r['bn_share']:.2f}"] for r in rows],
    )]


def memory_section(rows, skipped="Skipped (--skip-memory or --quick)."):
    """The peak-memory table of `benchmarks.memory`; `skipped` when `rows` is empty."""
    lines = ["## Peak memory (extra resident MiB over the run, fresh process per case)", ""]
    if not rows:
        return lines + [skipped]
    return lines + [table(
        ["case", "Keras MiB", "kbn MiB", "kbn/Keras"],
        [[r["case"], f"{r['keras_mib']:.1f}", f"{r['kbn_mib']:.1f}", f"{r['ratio']:.2f}"]
         for r in rows],
    )]


COMPARISON_COLUMNS = ["timed", "against", "timed ms", "against ms", "ratio", "paired 95% CI",
                      "A/A 95% CI", "vs A/A", "target", "met", "runs", "spread"]


def comparison_section(title, intro, rows, skipped):
    """A table of `benchmarks.comparisons` rows: the case's columns, then
    `COMPARISON_COLUMNS`; `skipped` when `rows` is empty."""
    lines = [f"## {title}", "", intro, ""]
    if not rows:
        return lines + [skipped]
    return lines + [table(
        list(rows[0]["case"]) + COMPARISON_COLUMNS,
        [[*r["case"].values(), r["timed"], r["against"], f"{r['timed_ms']:.2f}",
          f"{r['against_ms']:.2f}", f"{r['ratio']:.2f}", interval(r["ci"]),
          interval(r["aa_ci"]), r["verdict"], r["target"], r["met"], r["reps"],
          f"{100 * r['spread']:.0f}%"] for r in rows],
    )]


COMPARISON_TERMS = (
    "Medians; ratio = timed / against, < 1 means the timed layer is faster. Paired 95% CI: "
    "of the median per-round ratio; A/A 95% CI: the same for a second copy of the layer "
    "timed against; \"vs A/A\": faster or slower when the two intervals do not overlap, "
    "else a tie. \"met\": whether the median ratio is within a \"≤\" target, or, for "
    "\"tie or better\", whether \"vs A/A\" is not slower (targets: issue 8). "
    "Spread: interquartile range / median, the largest of the three layers."
)


def ghost_section(rows, skipped="Skipped (--skip-features)."):
    """The ghost batch-norm table of `benchmarks.ghost`."""
    return comparison_section(
        "Ghost batch norm (`virtual_batch_size=k`): training step",
        "kbn's ghost batch norm against kbn's plain layer and against tf_keras's "
        "`BatchNormalization(virtual_batch_size=k)` (tf.keras 2), same input, same rounds. "
        + COMPARISON_TERMS,
        rows, skipped,
    )


def multi_axis_section(rows, skipped="Skipped (--skip-features)."):
    """The several-axes table of `benchmarks.multi_axis`."""
    return comparison_section(
        "Several axes (`axis=[1, 3]`): training step",
        "kbn against tf_keras's `BatchNormalization(axis=[1, 3])` (tf.keras 2; Keras 3 has "
        "no such option). " + COMPARISON_TERMS,
        rows, skipped,
    )


BACKEND_NAMES = {"jax": "JAX", "torch": "PyTorch"}


def backend_sections(results):
    """One section per backend of `benchmarks.backends`: its table, or why it did not run."""
    sections = []
    for result in results:
        name = BACKEND_NAMES[result["backend"]]
        title = f"Backend {name}: training step and inference (kbn vs Keras)"
        if "rows" not in result:
            reason = result.get("skipped") or result["failed"]
            status = "Skipped" if "skipped" in result else "Failed"
            sections.append([f"## {title}", "", f"{status}: {reason}."])
            continue
        versions = result["versions"]
        sections.append(comparison_section(
            title,
            f"Keras {versions['keras']} on {name} {versions['library']}, device "
            f"{versions['device']}, kbn {versions['kbn']}, KBN_PATH={versions['kbn_path']}; "
            f"a fresh process (`benchmarks/backend_steps.py`). {result['method']} "
            + COMPARISON_TERMS,
            result["rows"], skipped="No cases.",
        ))
    return sections


def backends_skipped():
    """The section that stands for the other backends when they were not run."""
    return ["## Other backends (JAX, PyTorch)", "", "Skipped (--skip-backends or --quick)."]


def document(header_lines, *sections):
    """The whole report: the header, then each section after a blank line."""
    lines = list(header_lines)
    for section in sections:
        lines += [""] + section
    return "\n".join(lines) + "\n"


def log(message):
    """A progress line on stderr, so stdout holds the report alone."""
    print(message, file=sys.stderr, flush=True)


def publish(report, out, log):
    """Prints `report` and, when `out` is a path, writes it there too."""
    print(report)
    if out:
        with open(out, "w") as f:
            f.write(report)
        log(f"wrote {out}")
