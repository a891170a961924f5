"""The CUDA backend against PyTorch's cuDNN LSTM/GRU and against our own single-core CPU kernels.

Models are built from seeds: a PyTorch nn.LSTM/nn.GRU (hidden 32-512, 8 features, one layer)
and a Dense(1) head, converted to our graph with the same weights, so both engines run the same
maths (checked before timing). For each (cell, hidden, batch) it times one whole-sequence call
(T steps, input already on the host, output back on the host, GPU synchronised) and prints a
Markdown table for bench/RESULTS.md: our latency, cuDNN's, their ratio, and at the largest batch
our GPU throughput over our one-thread CPU throughput (issue 8's targets).

    NUMBA_NUM_THREADS=1 python bench/cuda.py [--hidden 32,64,128,256,512] [--batch 1,256] [--steps 50]

Needs a GPU, numba-cuda (`pip install -e '.[cuda]'`) and torch with CUDA. `--device cpu` runs the
same comparison on the CPU (torch on CPU, our cpu backend): a dry run of this script without a GPU.
"""

import argparse
import platform
import time

import numpy as np
import torch

from edgelstm.ir import Graph, Layer
from edgelstm.runtime import Model

FEATURES = 8


def torch_model(cell: str, hidden: int, device: str) -> torch.nn.Module:
    torch.manual_seed(hidden)
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(FEATURES, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, 1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    return Net().to(device).eval()


def as_graph(net: torch.nn.Module, cell: str, hidden: int) -> Graph:
    """Our graph with the PyTorch model's weights: gates reordered (GRU: r z n -> z r h), transposed."""
    w = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    kernel, recurrent = w["rnn.weight_ih_l0"].T, w["rnn.weight_hh_l0"].T
    attrs = {"units": hidden, "return_sequences": False, "go_backwards": False, "stateful": False,
             "zero_output_for_mask": False, "activation": "tanh", "recurrent_activation": "sigmoid"}
    if cell == "lstm":
        weights = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": w["rnn.bias_ih_l0"] + w["rnn.bias_hh_l0"]}
        attrs.update(output_activation="tanh", clip=0.0, input_forget=False)
    else:
        order = np.concatenate([np.arange(hidden, 2 * hidden), np.arange(hidden), np.arange(2 * hidden, 3 * hidden)])
        weights = {"kernel": kernel[:, order], "recurrent_kernel": recurrent[:, order],
                   "bias": w["rnn.bias_ih_l0"][order], "recurrent_bias": w["rnn.bias_hh_l0"][order]}
        attrs.update(reset_after=True)
    layers = [Layer("x", "input", [], {"shape": [None, FEATURES], "dtype": "float32"}),
              Layer("rnn", cell, ["x"], attrs, {k: np.ascontiguousarray(v) for k, v in weights.items()}),
              Layer("head", "dense", ["rnn"], {"activation": "linear"},
                    {"kernel": np.ascontiguousarray(w["head.weight"].T), "bias": w["head.bias"]})]
    return Graph(layers, "head")


def best_time(call, min_time: float = 1.0) -> float:
    """The median of repeated calls after a warm-up, repeating for at least `min_time` seconds."""
    call()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="32,64,128,256,512")
    parser.add_argument("--batch", default="1,256")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()
    backend = "cuda" if args.device == "cuda" else "cpu"
    batches = [int(b) for b in args.batch.split(",")]
    torch.backends.cudnn.benchmark = True
    if args.device == "cuda":
        from edgelstm.kernels import cuda

        where = f"{cuda.device_name()}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    else:
        where = f"{platform.processor() or platform.machine()} (dry run on the CPU); torch {torch.__version__}"
    print(f"{where}; {args.steps} steps of {FEATURES} features; our CPU column: 1 thread\n")
    print("| cell | hidden | batch | edgelstm | PyTorch | ours / PyTorch | ours GPU / ours 1-core CPU (seq/s) |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    for cell in args.cells.split(","):
        for hidden in [int(h) for h in args.hidden.split(",")]:
            net = torch_model(cell, hidden, args.device)
            graph = as_graph(net, cell, hidden)
            ours, cpu = Model(graph, backend=backend), Model(graph, backend="cpu")
            for batch in batches:
                x = rng.normal(0, 1, (batch, args.steps, FEATURES)).astype(np.float32)

                def theirs(x=x):
                    with torch.inference_mode():
                        y = net(torch.from_numpy(x).to(args.device)).cpu().numpy()
                    return y

                error = float(np.abs(ours.predict(x) - theirs()).max())
                if error > 1e-4:
                    raise SystemExit(f"{cell}({hidden}) batch {batch}: outputs differ by {error:.2g}")
                t_ours = best_time(lambda: ours.predict(x), args.min_time)
                t_theirs = best_time(theirs, args.min_time)
                cpu_ratio = ""
                if batch == max(batches):
                    cpu_ratio = f"{best_time(lambda: cpu.predict(x), args.min_time) / t_ours:.1f}×"
                print(f"| {cell} | {hidden} | {batch} | {t_ours * 1e6:,.0f} µs | {t_theirs * 1e6:,.0f} µs "
                      f"| {t_ours / t_theirs:.2f} | {cpu_ratio} |", flush=True)


if __name__ == "__main__":
    main()
