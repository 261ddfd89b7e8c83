"""Benchmark the runtime on a clip: per-stage and end-to-end figures, pipeline efficiency
(end-to-end fps / fps of the slowest stage run alone), live latency at 30 fps, publisher
throughput for single-person messages with vertices, and the engines' own benchmarks.

INPUT defaults to the bundled sample clip; the "longer clip" is INPUT re-timed to 30 fps and
looped to --long-frames frames (made once, in the cache).

--soak MINUTES runs a soak instead: INPUT looped in real time through the whole live chain for
MINUTES, published on loopback to a subscriber in this process, with the process's memory,
threads and open files sampled (``make soak``; docs/benchmarks.md, "Soak").
"""

from __future__ import annotations

NAME = "bench"
HELP = "benchmark stages, end-to-end pipeline, live latency and publisher throughput"


def add_arguments(parser) -> None:
    from stream.commands._common import add_engine_arguments

    parser.add_argument("source", nargs="?", default=None, metavar="INPUT", help="video (default: the sample clip)")
    parser.add_argument("--config", metavar="FILE.toml", default=None,
                        help="read the engine options from a TOML file (flags given override it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="frames of INPUT to use")
    parser.add_argument("--long-frames", type=int, default=300, metavar="N",
                        help="length of the longer 30 fps clip (0: skip the longer-clip and live runs)")
    parser.add_argument("--publish-messages", type=int, default=300, metavar="N",
                        help="messages in the publisher benchmark (0: skip)")
    parser.add_argument("--passes", type=int, default=2, metavar="N",
                        help="runs of each stage alone and of each offline pipeline; the best of them counts "
                             "(the same for both sides of the efficiency; default 2)")
    parser.add_argument("--no-engine-bench", action="store_true", help="skip engines.*.bench.benchmark()")
    parser.add_argument("--soak", type=float, default=None, metavar="MINUTES",
                        help="run a soak test instead: INPUT looped in real time through the live chain for MINUTES, "
                             "memory, threads and open files sampled")
    parser.add_argument("--soak-json", default=None, metavar="PATH",
                        help="write the soak's samples and summary to this JSON file")
    parser.add_argument("--soak-interval", type=float, default=None, metavar="S",
                        help="seconds between soak samples (default: a 20th of the run, between 0.5 and 10)")
    parser.add_argument("--soak-warmup", type=float, default=None, metavar="S",
                        help="seconds of the soak left out of the growth figures (default: 10%% of it, at most 60)")
    parser.add_argument("--soak-tracemalloc", action="store_true",
                        help="trace Python allocations during the soak and list the largest growths (slower)")
    parser.add_argument("--engine-bench-full", action="store_true",
                        help="let the pose benchmark time all its back ends (torch.compile takes minutes on CPU)")
    add_engine_arguments(parser)


def run(args) -> int:
    import json
    import os
    import platform

    import torch

    from stream import bench
    from stream.commands._common import build_chain, config_from_args
    from stream.compose import load_engines, open_source
    from stream.config import SAMPLE_CLIP
    from stream.publisher import Publisher

    config = config_from_args(args, max_frames=None, report_every_s=0.0)
    if args.soak is not None:
        return run_soak(args, config)
    path = config.source or str(SAMPLE_CLIP)
    engines = load_engines(config)
    body_model = engines.body_model
    result = {"input": path, "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
                                         "torch_threads": torch.get_num_threads(),
                                         "platform": platform.platform(), "device": config.device}}
    publisher = Publisher("tcp://127.0.0.1:*", sndhwm=1000).start()
    try:
        def make_chain(source, policy=None, clip=path):
            return build_chain(config.replace(source=clip), source=source, publisher=publisher, engines=engines,
                               policy=policy)

        make_source = lambda: open_source(config.replace(source=path))  # noqa: E731
        # 1. The offline pipeline on INPUT, and every stage alone in this process.
        passes = max(1, args.passes)
        result["alone"] = bench.stages_alone(make_source, make_chain, args.max_frames, passes=passes)
        result["stage_names"] = list(result["alone"])
        result["offline"] = bench.best_pipeline_run(make_source, make_chain, passes, policy="offline",
                                                    max_frames=args.max_frames)
        slowest = min(v["fps"] for v in result["alone"].values())
        result["efficiency"] = result["offline"]["throughput_fps"] / slowest if slowest > 0 else float("nan")
        # 2. The longer clip at 30 fps: offline, then live in real time.
        if args.long_frames > 0:
            long_path = str(bench.retimed_clip(path, fps=30, min_frames=args.long_frames, max_side=config.max_side))
            result["long_input"] = long_path
            make_long = lambda realtime=False: open_source(config.replace(source=long_path, realtime=realtime,  # noqa: E731
                                                                         max_side=None))
            result["long_alone"] = bench.stages_alone(make_long, make_chain, passes=passes)
            result["long_offline"] = bench.best_pipeline_run(make_long, make_chain, passes, policy="offline")
            slowest_long = min(v["fps"] for v in result["long_alone"].values())
            result["long_efficiency"] = result["long_offline"]["throughput_fps"] / slowest_long
            result["live_30fps"] = bench.pipeline_run(lambda: make_long(True), make_chain, policy="live")
            live = result["live_30fps"]
            live["two_frame_intervals_ms"] = 2000 / 30
            live["p95_within_two_intervals"] = bool(live["e2e_p95_ms"] <= 2000 / 30)
    finally:
        publisher.close()
    # 3. Publisher throughput with vertices.
    if args.publish_messages > 0:
        num_vertices = int(getattr(body_model, "num_vertices", 0) or 6890)
        result["publisher"] = [bench.publisher_throughput(num_vertices, args.publish_messages, dtype)
                               for dtype in ("float32", "float16")]
        paced = min(60, args.publish_messages)
        result["publisher_latency_30hz"] = [bench.publisher_throughput(num_vertices, paced, dtype, rate_hz=30.0)
                                            for dtype in ("float32", "float16")]
    if not args.no_engine_bench:
        if args.engine_bench_full or config.device != "cpu":
            backends = None  # the pose benchmark's own list
        else:
            backends = ("litert",) if config.backend == "auto" else (config.backend,)
        result["engines"] = bench.engine_benchmarks(config.device, backends)
    if args.json:
        print(json.dumps(result, default=_jsonable))
    else:
        print(format_result(result))
    return 0


def run_soak(args, config) -> int:
    """``--soak MINUTES``: the soak of stream.bench.soak; prints its summary, writes --soak-json."""
    import json
    import logging
    import math
    import os
    import platform
    from pathlib import Path

    from stream import bench
    from stream.cli import UserError
    from stream.commands._common import stop_on_sigterm
    from stream.compose import ComposeError
    from stream.config import ConfigError
    from stream.pipeline import PipelineError

    log = logging.getLogger("meshstream.bench")
    if not math.isfinite(args.soak) or args.soak <= 0:
        raise UserError(f"--soak {args.soak}: give the soak's length in minutes, more than 0 (e.g. --soak 60)")
    if args.soak_interval is not None and not args.soak_interval > 0:
        raise UserError(f"--soak-interval {args.soak_interval}: give seconds between samples, more than 0")
    if args.soak_warmup is not None and not args.soak_warmup >= 0:
        raise UserError(f"--soak-warmup {args.soak_warmup}: give seconds, 0 or more")
    if args.soak_json:
        folder = Path(args.soak_json).expanduser().resolve().parent
        if not folder.is_dir():
            raise UserError(f"--soak-json {args.soak_json}: folder {folder} does not exist (create it first)")

    def progress(row: dict) -> None:
        log.info("soak %7.1f s: RSS %.1f MB (heap in use %.1f, free %.1f), %s OS threads, %s fds, %d frames out, "
                 "%d received, %d missed, e2e p95 %.0f ms, degrade %d", row["t_s"], row["rss_mb"] or float("nan"),
                 row["heap_in_use_mb"] or float("nan"), row["heap_free_mb"] or float("nan"), row["os_threads"],
                 row["fds"], row["frames_out"], row["received"], row["missed"], row["e2e_p95_ms"],
                 row["degrade_level"])

    stop_on_sigterm()
    try:
        result = bench.soak(config, args.soak, interval_s=args.soak_interval, warmup_s=args.soak_warmup,
                            on_sample=progress, trace_memory=args.soak_tracemalloc)
    except (ComposeError, ConfigError, PipelineError) as exc:
        raise UserError(str(exc)) from exc
    result["machine"] = {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform()}
    if args.soak_json:
        with open(args.soak_json, "w") as f:
            json.dump(result, f, indent=1, default=_jsonable)
    if args.json:
        print(json.dumps(result["summary"], default=_jsonable))
    else:
        print(bench.format_soak(result))
    return 0


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo; else the platform's word)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def _cpu_line(alone: dict, offline: dict) -> str:
    """CPU per frame, which the machine's load hardly changes: the pipeline's against the sum of
    the stages' alone (more means the stages' threads cost each other), and the fps that the
    cores could sustain at the pipeline's CPU per frame."""
    parts = {name: figures.get("cpu_ms_per_frame") for name, figures in alone.items()}
    if any(v is None for v in parts.values()) or "cpu_ms_per_frame" not in offline:
        return "CPU per frame: not measured"
    import os

    total = sum(parts.values())
    cores = os.cpu_count() or 1
    return (f"CPU per frame: pipeline {offline['cpu_ms_per_frame']:.1f} ms, stages alone {total:.1f} ms in all ("
            + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) + f"); {cores} cores sustain at most "
            f"{1000 * cores / offline['cpu_ms_per_frame']:.1f} fps at the pipeline's CPU per frame")


def _passes(summary: dict) -> str:
    return " / ".join(f"{fps:.1f}" for fps in summary.get("passes_fps", [summary["throughput_fps"]])) + " fps"


def format_result(r: dict) -> str:
    from stream.pipeline import format_summary

    lines = [f"input: {r['input']}  ({r['machine']['cpu_count']} CPUs: {r['machine'].get('cpu_model', '?')}, "
             f"torch threads {r['machine']['torch_threads']})"]
    lines.append("stages alone: " + ", ".join(f"{k} {v['fps']:.1f} fps" for k, v in r["alone"].items()))
    lines += format_summary(r["offline"], "offline pipeline").splitlines()
    lines.append(f"pipeline efficiency: {r['efficiency']:.2f} (end-to-end fps / slowest stage alone; best of "
                 f"{_passes(r['offline'])} offline runs)")
    lines.append(_cpu_line(r["alone"], r["offline"]))
    if "long_offline" in r:
        lines.append("longer clip, stages alone: " + ", ".join(f"{k} {v['fps']:.1f} fps" for k, v in r["long_alone"].items()))
        lines += format_summary(r["long_offline"], f"longer clip offline ({r['long_input']})").splitlines()
        lines.append(f"pipeline efficiency on the longer clip: {r['long_efficiency']:.2f} (best of "
                     f"{_passes(r['long_offline'])} offline runs)")
        lines.append(_cpu_line(r["long_alone"], r["long_offline"]))
        lines += format_summary(r["live_30fps"], "live, 30 fps real time").splitlines()
        lines.append(f"    p95 within two frame intervals (66.7 ms): {r['live_30fps']['p95_within_two_intervals']}")
    for p in r.get("publisher", []):
        lines.append(f"publisher, as fast as possible ({p['num_vertices']} vertices, {p['dtype']}): {p['messages_per_s']:.0f} msg/s, "
                     f"{p['MB_per_s']:.0f} MB/s, {p['bytes_per_message'] / 1e3:.0f} kB/msg, received {p['received']}/{p['messages']}, "
                     f"publish call p50 {p['publish_call_p50_ms']:.2f} ms p95 {p['publish_call_p95_ms']:.2f} ms")
    for p in r.get("publisher_latency_30hz", []):
        lines.append(f"publisher at 30 Hz ({p['dtype']}): added latency (publish call -> decoded by the subscriber) "
                     f"p50 {p['added_latency_p50_ms']:.2f} ms p95 {p['added_latency_p95_ms']:.2f} ms, "
                     f"received {p['received']}/{p['messages']}")
    for name, value in r.get("engines", {}).items():
        lines.append(f"{name}: {value}")
    return "\n".join(lines)
