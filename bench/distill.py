"""Distillation against its targets: the teachers of tools/make_distill_teachers.py distilled into
small students, measured on held-out data; writes a table into bench/RESULTS.md between its
distill markers.

    python bench/distill.py

* forecaster: 2 x LSTM(128) teacher -> LSTM(24) int8 student, transfer data = the teacher's
  training windows (without their targets); task MSE on the held-out series against the
  teacher's, file size and latency (one 40-step window, one thread).
* text: Embedding + BiLSTM(64) teacher -> Embedding + BiLSTM(16) student (a quarter of the
  hidden size); agreement with the teacher's class on held-out sequences.
* training speed: seconds per epoch over 8,000 sequences of 40 steps for the 24-unit student.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import edgelstm
from edgelstm import benchmark
from results import write_section  # bench/ is this script's folder

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "models" / "distill"


def windows(series: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of `width` steps and the value after it."""
    x = np.lib.stride_tricks.sliding_window_view(series[:, :-1], width, axis=1).reshape(-1, width)
    return np.ascontiguousarray(x[:, :, None]), series[:, width:].reshape(-1, 1)


def latency(model: edgelstm.Model, x: np.ndarray) -> float:
    return min(float(np.median(benchmark.time_calls(lambda: model.predict(x), 0.5))) for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--results", default=HERE / "RESULTS.md", type=Path)
    args = parser.parse_args()
    benchmark.set_threads(1)
    entries = {e["name"]: e for e in json.loads((DATA / "manifest.json").read_text())}
    tmp = Path(tempfile.mkdtemp(prefix="edgelstm_distill_"))
    lines = [f"Machine: {benchmark.cpu_name()}; one thread.", ""]

    forecast = entries["forecast_teacher"]
    x, _ = windows(np.load(DATA / forecast["train_series"]), forecast["window"])
    x_test, y_test = windows(np.load(DATA / forecast["test_series"]), forecast["window"])
    teacher_path = tmp / "forecast_teacher.elstm"
    edgelstm.convert(DATA / forecast["file"], teacher_path)
    student_path = tmp / "forecast_student.elstm"
    start = time.perf_counter()
    report = edgelstm.distill(DATA / forecast["file"], x, student_path, hidden=24, epochs=args.epochs,
                              quantize="int8", seed=0)
    seconds = time.perf_counter() - start
    teacher, student = edgelstm.load(teacher_path), edgelstm.load(student_path)
    mse = {name: float(np.mean((m.predict(x_test) - y_test) ** 2)) for name, m in (("teacher", teacher), ("student", student))}
    one = x_test[:1]
    t_teacher, t_student = latency(teacher, one), latency(student, one)
    size_teacher, size_student = teacher_path.stat().st_size, student_path.stat().st_size
    lines += ["| forecaster | parameters | file | latency (1 window) | held-out MSE |", "|---|---|---|---|---|",
              f"| teacher: 2 x LSTM(128), float32 | {report.teacher_params:,} | {size_teacher / 1024:,.1f} KiB | "
              f"{t_teacher * 1e6:,.0f} µs | {mse['teacher']:.4f} |",
              f"| student: LSTM(24), int8 | {report.student_params:,} | {size_student / 1024:,.1f} KiB | "
              f"{t_student * 1e6:,.0f} µs | {mse['student']:.4f} |",
              f"| student / teacher | {report.student_params / report.teacher_params:.3f} | "
              f"{size_student / size_teacher:.3f} ({size_teacher / size_student:.0f}x smaller) | "
              f"{t_student / t_teacher:.3f} ({t_teacher / t_student:.0f}x faster) | {mse['student'] / mse['teacher']:.3f} |",
              "", f"{len(x):,} transfer windows, {report.epochs} epochs (best {report.best_epoch}), "
              f"{seconds:.0f} s in all including the teacher's outputs.", ""]
    print("\n".join(lines[-8:]), flush=True)

    text = entries["text_teacher"]
    ids = np.load(DATA / text["transfer"]).astype(np.int32)
    test = np.load(DATA / text["test"]).astype(np.int32)
    labels = np.load(DATA / text["test_labels"])
    teacher_path = tmp / "text_teacher.elstm"
    edgelstm.convert(DATA / text["file"], teacher_path)
    student_path = tmp / "text_student.elstm"
    report = edgelstm.distill(DATA / text["file"], ids, student_path, hidden=16, bidirectional=True,
                              epochs=args.epochs, seed=0)
    teacher, student = edgelstm.load(teacher_path), edgelstm.load(student_path)
    picks = {name: m.predict(test).argmax(-1) for name, m in (("teacher", teacher), ("student", student))}
    agreement = float(np.mean(picks["teacher"] == picks["student"]))
    accuracy = {name: float(np.mean(p == labels)) for name, p in picks.items()}
    t_teacher, t_student = latency(teacher, test[:1]), latency(student, test[:1])
    lines += ["| text classifier | parameters | file | latency (1 sequence) | held-out accuracy | agreement with teacher |",
              "|---|---|---|---|---|---|",
              f"| teacher: Embedding(200, 32) + BiLSTM(64) | {report.teacher_params:,} | "
              f"{teacher_path.stat().st_size / 1024:,.1f} KiB | {t_teacher * 1e6:,.0f} µs | {100 * accuracy['teacher']:.1f}% | — |",
              f"| student: Embedding(200, 32) + BiLSTM(16) | {report.student_params:,} | "
              f"{student_path.stat().st_size / 1024:,.1f} KiB | {t_student * 1e6:,.0f} µs | {100 * accuracy['student']:.1f}% | "
              f"{100 * agreement:.1f}% |", ""]
    print("\n".join(lines[-5:]), flush=True)

    from edgelstm.passes import distill as passes
    x8k = np.concatenate([x] * (-(-8000 // len(x))))[:8000]
    teacher_graph = edgelstm.import_model(DATA / forecast["file"])
    result = passes.train_student(teacher_graph, x8k, passes.Options(hidden=24, epochs=3, val_split=0.0))
    per_epoch = float(np.median([e.seconds for e in result.history]))
    lines += [f"Training speed: {per_epoch:.1f} s per epoch over 8,000 sequences of 40 steps for the LSTM(24) "
              "student (batch 64, one thread, forward, backward and Adam)."]
    print(lines[-1], flush=True)

    write_section(args.results, "distill", lines, "## Distillation (issue 7)\n\nWritten by `bench/distill.py`.")


if __name__ == "__main__":
    main()
