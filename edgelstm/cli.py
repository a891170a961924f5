"""The ``edgelstm`` command: thin click commands over the library.

Exit codes: 0 success, 1 error (one ``Error: ...`` line on stderr, no traceback unless
``--debug``), 2 usage error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__, artifact, benchmark, scale, convert as convert_model, crosscheck, distill as distill_model, \
    import_model, load
from .errors import EdgeLSTMError, FormatError
from .ir import SCALE_SUFFIX, scale_names
from .passes import distill as distill_pass, quantize as quantize_pass
from .runtime import BACKEND_CHOICES


class _Group(click.Group):
    """Turns every error into one line and exit code 1; ``--debug`` shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`edgelstm run ... | head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, EdgeLSTMError):
                message = str(exc)
            elif isinstance(exc, OSError):
                message = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
            elif isinstance(exc, MemoryError):
                message = "out of memory; try a smaller --batch-size"
            else:
                message = f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it"
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgelstm")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx, debug):
    """Convert trained LSTM/GRU models to .elstm files and run them with numpy and numba."""
    ctx.obj = {"debug": debug}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _quantize_options(default: str | None):
    """The options `convert` and `quantize` share."""
    def decorate(command):
        for option in reversed([
            click.option("--quantize", "scheme", type=click.Choice(["int8", "float16"]), default=default,
                         show_default=default is not None,
                         help="Store int8 weights (int8 products at run time) or float16 weights."),
            click.option("--per-channel/--per-tensor", default=True, show_default=True,
                         help="One int8 scale per output column, or one per weight matrix."),
            click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
                         help="A .npy of typical inputs: fixes int8 input scales and measures the error."),
            click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False),
                         help="A .npy of inputs to measure the quantization error on."),
        ]):
            command = option(command)
        return command
    return decorate


def _convert(source, output, scheme, per_channel, calibration, eval_path) -> None:
    output = Path(output or Path(source).with_suffix(artifact.SUFFIX))
    if Path(source).resolve() == output.resolve():
        raise click.UsageError("the output would overwrite the source; give another -o")
    graph = convert_model(source, output, quantize=scheme, per_channel=per_channel,
                          calibration=_load_npy(calibration) if calibration else None,
                          eval_data=_load_npy(eval_path) if eval_path else None)
    params = sum(layer.param_count() for layer in graph.layers)
    size = output.stat().st_size
    click.echo(f"Converted {source} -> {output}: {len(graph.layers) - 1} layers, {params:,} parameters, {_human(size)}")
    if scheme:
        info = graph.metadata["quantization"]
        error = info["error"]
        click.echo(f"  {scheme}: {_human(info['float32_bytes'])} as float32 -> {_human(size)} "
                   f"({size / info['float32_bytes']:.2f}x)" + (f"; input scales {info['input_scales']}"
                                                                if scheme == "int8" else ""))
        report = quantize_pass.ErrorReport(**error)
        click.echo(f"  error against float32 on {report.data}: max |diff| {report.max_abs:.3g}, "
                   f"relative RMSE {100 * report.relative_rmse:.3f}%")
        if 1 < len(error["per_output"]) <= 8:
            for i, (worst, rel) in enumerate(error["per_output"]):
                click.echo(f"    output {i}: max |diff| {worst:.3g}, relative RMSE {100 * rel:.3f}%")
        click.echo(f"  verify tolerance against a float32 or dynamic-range int8 twin: atol {report.verify_atol:g} "
                   f"({quantize_pass.VERIFY_ERROR_FACTOR}x max |diff|; edgelstm verify's default for this file)")
        if report.warning:
            click.echo(f"Warning: {report.warning}", err=True)


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the .elstm file (default: SOURCE with the .elstm suffix).")
@_quantize_options(default=None)
def convert(source, output, scheme, per_channel, calibration, eval_path):
    """Convert a Keras (.keras, .h5) or ONNX (.onnx) model to an .elstm file."""
    _convert(source, output, scheme, per_channel, calibration, eval_path)


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The .elstm file to write.")
@_quantize_options(default="int8")
def quantize(source, output, scheme, per_channel, calibration, eval_path):
    """Quantize a float32 model (.elstm, or any file convert reads) to int8 or float16 weights."""
    _convert(source, output, scheme, per_channel, calibration, eval_path)


@main.command()
@click.argument("teacher", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Unlabelled transfer inputs (.npy) shaped like the teacher's input.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The student .elstm file.")
@click.option("--hidden", type=click.IntRange(min=1), default=32, show_default=True, help="Units per student layer.")
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Stacked recurrent layers.")
@click.option("--cell", type=click.Choice(distill_pass.CELLS), default="lstm", show_default=True)
@click.option("--bidirectional", is_flag=True, help="Bidirectional student layers (outputs concatenated).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True, help="Adam's step size.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Softens softmax/sigmoid targets; the KL loss is scaled by T².")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Share of the transfer data held out for early stopping and the report.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Epochs without a better validation loss before stopping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--targets", "targets_path", type=click.Path(exists=True, dir_okay=False),
              help="Ground truth for the transfer data (.npy), weighted in with a small term.")
@click.option("--augment", type=click.Choice(distill_pass.AUGMENTATIONS),
              help="Add a perturbed copy of the transfer data (noise: 5%% of each feature's spread; "
                   "jitter: time shifts of up to 2 steps).")
@click.option("--quantize", "scheme", type=click.Choice(["int8"]),
              help="Train the last epochs with int8-rounded weights, then write an int8 student.")
def distill(teacher, data_path, output, hidden, layers, cell, bidirectional, epochs, batch_size, lr, temperature,
            val_split, patience, seed, targets_path, augment, scheme):
    """Train a small, fast student to reproduce a teacher model (.keras, .h5, .onnx or .elstm)."""
    with click.progressbar(length=epochs, label="distilling", file=sys.stderr,
                           item_show_func=lambda e: e and _epoch_text(e)) as bar:
        report = distill_model(teacher, _load_npy(data_path), output,
                               targets=_load_npy(targets_path) if targets_path else None,
                               progress=lambda e: bar.update(1, e),
                               hidden=hidden, layers=layers, cell=cell, bidirectional=bidirectional, epochs=epochs,
                               batch_size=batch_size, lr=lr, temperature=temperature, val_split=val_split,
                               patience=patience, seed=seed, augment=augment, quantize=scheme)
    if report.interrupted:
        click.echo("Interrupted: keeping the best student so far.", err=True)
    agreement = report.metric == "agreement"
    click.echo(f"Wrote {output}: best of {report.epochs} epochs at epoch {report.best_epoch}, "
               f"{report.seconds_per_epoch:.2f} s per epoch")
    table = [("", "teacher", "student", "ratio"),
             ("parameters", f"{report.teacher_params:,}", f"{report.student_params:,}",
              f"{report.teacher_params / report.student_params:.1f}x smaller"),
             ("file", _human(report.teacher_bytes), _human(report.student_bytes),
              f"{report.teacher_bytes / report.student_bytes:.1f}x smaller"),
             ("latency (1 sequence)", f"{report.teacher_latency_s * 1e6:,.0f} µs", f"{report.student_latency_s * 1e6:,.0f} µs",
              f"{report.teacher_latency_s / report.student_latency_s:.1f}x faster")]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo(f"  on {report.validation_rows} {'validation' if report.held_out else 'training'} sequences: "
               + (f"the student picks the teacher's class on {100 * report.value:.1f}%" if agreement
                  else f"MSE against the teacher {report.value:.4g}"))


def _epoch_text(e: distill_pass.Epoch) -> str:
    metric = f"{100 * e.val_metric:.1f}%" if e.metric == "agreement" else f"{e.val_metric:.4g}"
    return (f"epoch {e.epoch}: loss {e.train_loss:.4g}, val {e.metric} {metric}"
            + (" (int8 weights)" if e.fake_quantized else ""))


def _shape_text(shape) -> str:
    return "(" + ", ".join(["batch"] + ["?" if d is None else str(d) for d in shape]) + ")"


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def inspect(model, as_json):
    """Describe a model: layers, shapes, parameters, bytes and dtypes."""
    graph = import_model(model)
    rows = [{"name": l.name, "kind": l.kind, "inputs": l.inputs, "output_shape": list(l.shape),
             "params": l.param_count(), "bytes": l.nbytes(),
             "dtypes": sorted({str(w.dtype) for w in l.weights.values()}), "attrs": l.attrs,
             "tensors": _tensors(l)}
            for l in graph.layers]
    info = {"file": str(model), "file_bytes": Path(model).stat().st_size, "metadata": graph.metadata,
            "input": {"shape": list(graph.input.shape), "dtype": graph.input.attrs["dtype"]},
            "output": graph.output, "layers": rows,
            "params": sum(r["params"] for r in rows), "weight_bytes": sum(r["bytes"] for r in rows)}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{model}: {_human(info['file_bytes'])}, {info['params']:,} parameters "
               f"({_human(info['weight_bytes'])} of weights)")
    plain = {k: v for k, v in graph.metadata.items() if k not in ("quantization", "distillation")}
    if plain:
        click.echo("  " + ", ".join(f"{k}: {v}" for k, v in sorted(plain.items())))
    if "distillation" in graph.metadata:
        click.echo("  " + _distillation_text(graph.metadata["distillation"]))
    if "quantization" in graph.metadata:
        click.echo("  " + _quantization_text(graph.metadata["quantization"]))
    table = [("layer", "kind", "output shape", "params", "bytes", "dtypes")]
    table += [(r["name"], r["kind"], _shape_text(l.shape), f"{r['params']:,}", f"{r['bytes']:,}",
               ",".join(r["dtypes"]) or "-") for r, l in zip(rows, graph.layers)]
    _echo_table(table, left=3)
    tensors = [("tensor", "dtype", "shape", "int8 scales")]
    tensors += [(t["name"], t["dtype"], "x".join(map(str, t["shape"])) or "scalar",
                 f"{t['scale'][0]:.3g} - {t['scale'][1]:.3g}" if "scale" in t else "-")
                for r in rows for t in r["tensors"]]
    if len(tensors) > 1:
        click.echo("")
        _echo_table(tensors, left=3)


def _distillation_text(info: dict) -> str:
    shape = (f"{info.get('layers')} x {'bidirectional ' if info.get('bidirectional') else ''}"
             f"{str(info.get('cell')).upper()}({info.get('hidden')})")
    text = f"distilled student: {shape}"
    report = info.get("report")
    if isinstance(report, dict):
        figure = (f"picks the teacher's class on {100 * report['value']:.1f}%" if report.get("metric") == "agreement"
                  else f"MSE against the teacher {report.get('value', float('nan')):.4g}")
        text += (f"; best of {report.get('epochs')} epochs at {report.get('best_epoch')}; {figure} on "
                 f"{report.get('validation_rows')} {'validation' if report.get('held_out', True) else 'training'} "
                 f"sequences; teacher {report.get('teacher_params', 0):,} parameters")
    return text


def _quantization_text(info: dict) -> str:
    text = f"quantized: {info.get('scheme')}"
    if info.get("scheme") == "int8":
        text += f", {'per channel' if info.get('per_channel') else 'per tensor'}, input scales {info.get('input_scales')}"
    error = info.get("error")
    if isinstance(error, dict):
        text += (f"; measured on {error.get('data')}: relative RMSE {100 * error.get('relative_rmse', 0):.3f}%, "
                 f"max |diff| {error.get('max_abs', 0):.3g}")
    return text


def _tensors(layer) -> list[dict]:
    """Each weight of `layer` with its dtype and shape; int8 ones with their scales' range."""
    found, scales = [], scale_names(layer)
    for name, w in sorted(layer.weights.items()):
        if name in scales:
            continue
        info = {"name": f"{layer.name}/{name}", "dtype": str(w.dtype), "shape": list(w.shape)}
        if w.dtype == np.int8:
            scale = layer.weights[name + SCALE_SUFFIX]
            info["scale"] = [float(scale.min()), float(scale.max())]
        found.append(info)
    return found


def _echo_table(table: list[tuple], left: int) -> None:
    """Print rows as aligned columns: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  " + "  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                                    for i, (cell, w) in enumerate(zip(row, widths))).rstrip())


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(f"cannot read {path} as a .npy array: {exc}") from None


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-i", "--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Input sequences as a .npy array [batch, time, features] (or [batch, time] token ids).")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False),
              help="Write the outputs to this .npy file (default: print them).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
              help="Kernels to run with.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Run at most this many sequences at once.")
@click.option("--check-finite", is_flag=True,
              help="Refuse inputs holding NaN or infinity (by default they propagate to their sequence's outputs).")
def run(model, input_path, output_path, backend, batch_size, check_finite):
    """Run a model on the sequences of a .npy file."""
    m = load(model, backend=backend)
    y = m.predict(_load_npy(input_path), batch_size=batch_size, check_finite=check_finite)
    if output_path:
        artifact.atomic_write(output_path, lambda f: np.save(f, y))
        click.echo(f"Wrote {output_path}: shape {y.shape}, dtype {y.dtype}", err=True)
    else:
        with np.printoptions(threshold=sys.maxsize if y.size <= 1000 else 1000, precision=6, suppress=True):
            click.echo(np.array2string(y))


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--tflite", "tflite", type=click.Path(exists=True, dir_okay=False), help="Reference .tflite model (LiteRT).")
@click.option("--onnx", "onnx", type=click.Path(exists=True, dir_okay=False), help="Reference .onnx model (ONNX Runtime).")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Input sequences as a .npy array.")
@click.option("--atol", type=float, help="Absolute tolerance [default: 1e-5; for a quantized model, four times "
                                       "the error against float32 its conversion recorded].")
@click.option("--rtol", type=float, default=1e-5, show_default=True, help="Relative tolerance.")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True)
@click.pass_context
def verify(ctx, model, tflite, onnx, input_path, atol, rtol, backend):
    """Check our outputs against the same model under LiteRT or ONNX Runtime.

    Exits 0 only when every compared output is within tolerance.
    """
    if (tflite is None) == (onnx is None):
        raise click.UsageError("give exactly one of --tflite and --onnx")
    reference, kind = (tflite, "tflite") if tflite else (onnx, "onnx")
    ours = load(model, backend=backend)
    if atol is None:
        atol, why = crosscheck.default_atol(ours)
        click.echo(f"tolerance: atol={atol:g} ({why})")
    rows = crosscheck.verify(ours, reference, _load_npy(input_path), atol, rtol, kind)
    table = [("output", "shape", "max abs error", "max rel error", "result")]
    table += [(r.name, str(r.shape), f"{r.max_abs_error:.3g}", f"{r.max_rel_error:.3g}",
               "pass" if r.passed else "FAIL") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    failed = sum(not r.passed for r in rows)
    click.echo(f"{'FAIL' if failed else 'OK'}: {len(rows) - failed} of {len(rows)} outputs within "
               f"atol={atol:g}, rtol={rtol:g} against {kind} ({reference})")
    if failed:
        ctx.exit(1)


def _peer(value: str) -> tuple[str, str]:
    kind, _, path = value.partition(":")
    if kind not in benchmark.PEER_KINDS or not path:
        raise click.BadParameter(f"'{value}': use tflite:PATH or onnx:PATH", param_hint="--compare")
    if not os.path.isfile(path):
        raise click.BadParameter(f"'{path}' is not a file", param_hint="--compare")
    return kind, path


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per call.")
@click.option("--seq-len", type=click.IntRange(min=1), help="Steps per sequence (models of any length need it).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every engine (default: all cores).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True)
@click.option("--compare", "peers", multiple=True, metavar="KIND:PATH",
              help="A peer to time on the same input: tflite:model.tflite (LiteRT) or onnx:model.onnx "
                   "(ONNX Runtime). Repeatable.")
@click.option("--min-time", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Seconds of timed calls per engine.")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory probes (a new process per engine).")
@click.option("--no-cold-start", is_flag=True, help="Skip timing `edgelstm run` in a new process.")
@click.option("--first-compile", is_flag=True, help="Also time a first run with an empty numba cache (slow).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures as JSON.")
def bench(model, batch, seq_len, threads, backend, peers, min_time, no_memory, no_cold_start, first_compile,
          json_path):
    """Time a model: latency, throughput, size, memory, streaming step and cold start, beside peers."""
    compare = [_peer(value) for value in peers]
    phases = 1 + len(compare) + (0 if no_memory else 1 + len(compare)) + 1 + (not no_cold_start) + first_compile
    with click.progressbar(length=phases, label="benchmarking", file=sys.stderr) as bar:
        def progress(message):
            bar.label = message
            bar.update(1)
        report = benchmark.run(model, batch, seq_len, threads, backend, compare, min_time, memory=not no_memory,
                               cold=not no_cold_start, first_compile=first_compile, progress=progress)
    click.echo(benchmark.format_report(report, _human))
    if json_path:
        benchmark.write_json(report, json_path)
        click.echo(f"Wrote {json_path}", err=True)


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [name.strip() for name in value.split(",") if name.strip()]


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("source", metavar="INPUT", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Where the predictions go, of the input's kind: a .npy file, a folder of .npy files, or a "
                   "Parquet folder (part files, with the input's key columns beside a 'prediction' column).")
@click.option("--engine", type=click.Choice(scale.ENGINES), default="local", show_default=True,
              help="local: threads of this process; dask or ray: a cluster (its extra installed).")
@click.option("--address", help="The Dask scheduler or Ray cluster to use (default: start one on this machine).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Threads (local) or worker processes of a cluster started here (default: one per core).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8192, show_default=True,
              help="Sequences per part: one read, one prediction, one atomic write.")
@click.option("--window", type=click.IntRange(min=1),
              help="Cut each input series [steps, features] into windows of this many steps.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="Steps between windows.")
@click.option("--columns", help="Parquet: the column of whole sequences, or (with --window) the feature columns, "
                                "comma-separated.")
@click.option("--keys", help="Parquet: columns to copy beside the predictions, comma-separated (default: all "
                             "others; in window mode their values at each window's last step).")
@click.option("--overwrite", is_flag=True,
              help="Replace the parts of a different earlier run, or finished outputs, at OUTPUT.")
@click.option("--model-by-path", is_flag=True,
              help="Workers read the .elstm at its path (storage they all see) instead of receiving its bytes.")
def score(model, source, output, engine, address, workers, batch_size, window, stride, columns, keys, overwrite,
          model_by_path):
    """Score every sequence (or window) of INPUT: a .npy file, a folder of them, or a Parquet dataset.

    Parts are written atomically as they finish; rerunning the same command resumes.
    """
    bar = click.progressbar(length=1, label="scoring", file=sys.stderr, show_pos=True)

    def progress(rows, total):
        bar.length = total
        bar.update(rows)
    with bar:
        summary = scale.score(model, source, output, engine=engine, address=address, workers=workers,
                              batch_size=batch_size, window=window, stride=stride, columns=_names(columns),
                              keys=_names(keys), overwrite=overwrite, model_by_path=model_by_path,
                              progress=progress)
    parts = f"{summary.parts} part{'s' if summary.parts != 1 else ''}"
    if summary.resumed == summary.parts:
        click.echo(f"Nothing to do: {summary.output} already holds all {summary.sequences:,} predictions ({parts})",
                   err=True)
        return
    resumed = f", {summary.resumed} of them from an earlier run" if summary.resumed else ""
    click.echo(f"Wrote {summary.output}: {summary.sequences:,} predictions in {parts}{resumed}; "
               f"{summary.engine} engine, {summary.workers} workers, {summary.seconds:.1f} s "
               f"({summary.sequences / max(summary.seconds, 1e-9):,.0f} sequences/s)", err=True)


if __name__ == "__main__":
    main()
