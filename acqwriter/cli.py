"""The ``acqwriter`` command line: ``acquire``, ``pyramid``, ``info``.

``acquire`` builds an :class:`AcquisitionSpec` from a spec file (``--spec``) overlaid
with the options given on the command line (same field names), opens the camera
(:class:`acqwriter.devices.Microscope`), runs
:func:`acqwriter.devices.run_acquisition` with a live progress bar on stderr, and
prints the summary (``--json``: as JSON on stdout).

Exit status: 0 only when every requested frame was written; 1 when the acquisition
ran but is incomplete (drops, camera or writer error — the reason is printed); 2 for
invalid input (spec, options, paths) before anything was acquired.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from acqwriter import __version__, jsonio
from acqwriter.spec import SpecError

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with what a user needs when an option is wrong: the one line that says
    what (no usage dump before it), a "did you mean" for a misspelt option or value,
    and no abbreviations (``--pyramid`` must not silently mean ``--pyramid-method``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}{self._suggestion(message)}", file=sys.stderr)
        print(f"(see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def _suggestion(self, message: str) -> str:
        from acqwriter.spec import did_you_mean

        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            given = unknown.group(1).split("=")[0]
            return did_you_mean(given, _option_strings(self))
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            return did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        return ""


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of ``parser`` and its sub-commands (argparse reports a sub-command's
    unknown option from the top-level parser)."""
    options = []
    for action in parser._actions:
        options.extend(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options.extend(_option_strings(sub))
    return sorted(set(options))


def write_out(text: str) -> None:
    """Print ``text`` on stdout; a reader that went away (``| head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the broken pipe again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _pair(text: str, sep: str = "x") -> list[int]:
    parts = text.lower().replace(",", sep).split(sep)
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 2048{sep}2048, got {text!r}"
        ) from None


def _shape(text: str) -> list[int]:
    values = _pair(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 2048x2048, got {text!r}")
    return values


def _roi(text: str) -> list[int]:
    values = _pair(text, ",")
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected X,Y,WIDTH,HEIGHT, got {text!r}")
    return values


def _blocksize(text: str) -> int | str:
    """``auto`` or a whole number of bytes; the range is checked by the spec."""
    text = text.strip().lower()
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a whole number of bytes, got {text!r}"
        ) from None


def _out(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path such as run.ome.zarr, got ''")
    return text


def _channel(text: str) -> dict[str, Any]:
    """``NAME[:RRGGBB[:START-END]]`` → a channel (name, colour, display window)."""
    parts = text.split(":")
    if not parts[0].strip() or len(parts) > 3:
        raise argparse.ArgumentTypeError(
            f"expected NAME, NAME:RRGGBB or NAME:RRGGBB:START-END, e.g. GFP:00FF00, got {text!r}"
        )
    channel: dict[str, Any] = {"name": parts[0].strip()}
    if len(parts) > 1 and parts[1].strip():
        channel["color"] = parts[1].strip()
    if len(parts) > 2:
        window = re.fullmatch(r"\s*(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*", parts[2])
        if not window:
            raise argparse.ArgumentTypeError(
                f"expected the display window as START-END, e.g. 100-4000, got {parts[2]!r}"
            )
        channel["window"] = [float(window.group(1)), float(window.group(2))]
    return channel


def _axis_map(text: str) -> dict[str, Any]:
    """``t=32,y=256`` → dict; ``32x256x256`` → {"_trailing": [32, 256, 256]}."""
    text = text.strip()
    if "=" not in text:
        return {"_trailing": _pair(text)}
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        value = value.strip().lower()
        if not key or not value:
            raise argparse.ArgumentTypeError(
                f"expected axis=value pairs like t=32,y=256, got {text!r}"
            )
        try:
            out[key] = None if value in ("none", "null", "unbounded") else int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key}: expected an integer, got {value!r}") from None
    return out


def _add_acquire(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "acquire",
        help="record frames from a camera into an OME-Zarr dataset",
        description="Record frames from a camera ('sim', 'demo' or a Micro-Manager config file) "
        "into an OME-Zarr dataset. Options override the fields of --spec.",
    )
    add_spec_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_acquire)


def add_spec_options(p: argparse.ArgumentParser) -> None:
    """The acquisition-spec options shared by ``acquire`` and ``ctl configure``."""
    p.add_argument(
        "--spec", type=Path, help="spec file (.json/.yaml/.toml) with any of the fields below"
    )
    p.add_argument("--camera", help="'sim' (default), 'demo', or a Micro-Manager .cfg path")
    p.add_argument("--frames", type=int, help="number of frames")
    p.add_argument(
        "--timepoints", type=int, help="number of time points (frames = time points x c x z)"
    )
    p.add_argument(
        "--allow-partial",
        dest="allow_partial",
        action="store_true",
        default=None,
        help="accept a frame count that ends inside a time point (its missing frames flagged)",
    )
    p.add_argument("--duration", help="acquisition time, e.g. 10s, 500ms, 2m")
    p.add_argument("--shape", type=_shape, help="frame HEIGHTxWIDTH (sim camera)")
    p.add_argument("--dtype", choices=["uint8", "uint16"], help="pixel type (sim camera)")
    p.add_argument(
        "--fps", type=float, help="frame rate of the sim camera (default: as fast as possible)"
    )
    p.add_argument("--exposure", dest="exposure_ms", type=float, help="exposure in ms")
    p.add_argument("--roi", type=_roi, help="camera ROI X,Y,WIDTH,HEIGHT")
    p.add_argument("--binning", type=int, help="camera binning")
    p.add_argument("--out", type=_out, help="output dataset path (e.g. run.ome.zarr)")
    p.add_argument(
        "--overwrite", action="store_true", default=None, help="replace an existing dataset"
    )
    p.add_argument("--dims", help="axes, an ordered subset of tczyx ending in yx (default tyx)")
    p.add_argument("--sizes", type=_axis_map, help="sizes of the non-frame axes, e.g. c=3,z=20")
    p.add_argument(
        "--chunks",
        type=_axis_map,
        help="chunk shape: t=32,y=256,x=256 or 32x256x256 (trailing axes)",
    )
    p.add_argument("--codec", help="lz4 | blosc-lz4 | blosc-zstd | zstd | none")
    p.add_argument("--clevel", type=int, help="compression level")
    p.add_argument(
        "--shuffle", choices=["shuffle", "bitshuffle", "noshuffle"], help="blosc shuffle"
    )
    p.add_argument(
        "--blocksize",
        type=_blocksize,
        help="blosc block size in bytes, 0 (c-blosc chooses) or auto (default: 1 MiB for zstd)",
    )
    p.add_argument(
        "--channel",
        dest="channels",
        type=_channel,
        action="append",
        help="channel NAME[:RRGGBB[:START-END]] (repeat per channel), e.g. GFP:00FF00",
    )
    p.add_argument("--pixel-size", dest="pixel_size", type=float, help="pixel size (µm by default)")
    p.add_argument("--z-step", dest="z_step", type=float, help="z step")
    p.add_argument("--time-increment", dest="time_increment", type=float, help="time step (s)")
    p.add_argument("--ring-mb", type=float, help="ring buffer size in MiB (default 512)")
    p.add_argument("--overflow", choices=["block", "drop"], help="when the ring is full")
    p.add_argument("--threads", type=int, help="writer threads (default: one per core)")
    p.add_argument(
        "--sync", choices=["none", "close", "always"], help="fsync policy (default close)"
    )
    p.add_argument("--no-pyramid", action="store_true", help="do not build pyramid levels")
    p.add_argument("--pyramid-method", choices=["mean", "nearest"])


_PLAIN_FIELDS = [
    "camera",
    "frames",
    "timepoints",
    "allow_partial",
    "duration",
    "shape",
    "dtype",
    "fps",
    "exposure_ms",
    "roi",
    "binning",
    "out",
    "overwrite",
    "dims",
    "sizes",
    "pixel_size",
    "z_step",
    "time_increment",
    "channels",
    "overflow",
    "threads",
    "sync",
]


def spec_mapping(args: argparse.Namespace) -> dict[str, Any]:
    """Spec file fields, overridden by the options given on the command line (unvalidated)."""
    from acqwriter.spec_io import load_mapping

    data: dict[str, Any] = load_mapping(args.spec) if args.spec else {}
    for name in _PLAIN_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = str(value) if isinstance(value, Path) else value
    if args.ring_mb is not None:
        data["ring_bytes"] = int(args.ring_mb * 2**20)
    codec_given = any(
        v is not None for v in (args.codec, args.clevel, args.shuffle, args.blocksize)
    )
    if codec_given:
        from acqwriter.spec import Compression

        base = data.get("codec", "lz4") if args.codec is None else args.codec
        try:
            codec = Compression.model_validate(base).model_dump()
        except Exception:
            codec = base  # let full validation report it against the field name
        if isinstance(codec, dict):
            if args.clevel is not None:
                codec["level"] = args.clevel
            if args.shuffle is not None:
                codec["shuffle"] = args.shuffle
            if args.blocksize is not None:
                codec["blocksize"] = args.blocksize
        data["codec"] = codec
    if args.no_pyramid or args.pyramid_method:
        pyramid = dict(data.get("pyramid") or {})
        if args.no_pyramid:
            pyramid["enabled"] = False
        if args.pyramid_method:
            pyramid["method"] = args.pyramid_method
        data["pyramid"] = pyramid
    if args.chunks is not None:
        chunks = dict(args.chunks)
        trailing = chunks.pop("_trailing", None)
        if trailing is not None:
            dims = str(data.get("dims", "tyx"))
            if len(trailing) > len(dims):
                raise SpecError(
                    f"chunks: {len(trailing)} values for the {len(dims)} axes of dims {dims!r}"
                )
            chunks = dict(zip(dims[-len(trailing) :], trailing, strict=True))
        data["chunks"] = chunks
    if data.get("camera", "sim") == "sim" and "out" in data:
        data.setdefault("shape", [2048, 2048])
        data.setdefault("dtype", "uint16")
    if "out" not in data:
        raise SpecError("out: required (give --out PATH or 'out' in the spec file)")
    return data


def build_acquisition_spec(args: argparse.Namespace):  # -> AcquisitionSpec
    """The validated :class:`AcquisitionSpec` from ``--spec`` and the options."""
    from acqwriter.acquisition_spec import AcquisitionSpec

    return AcquisitionSpec.parse(spec_mapping(args))


class _Progress:
    """Rich progress bars fed by the stream's progress snapshots, one per phase.

    ``acquiring`` (frames written of those requested, or time of the duration), then
    ``flushing`` (the backlog written and the extent committed) and ``pyramid level k/n``
    (that level's chunks, with its own rate), then ``done``: closing a dataset can take as
    long as the acquisition, and a bar frozen at 421/500 looks hung."""

    def __init__(self, total_frames: int | None, duration: float | None, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.total_frames = total_frames
        self.duration = duration
        self.progress = None
        self.phase = "acquiring"
        self.level = 0
        if quiet:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description:<16}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]:>8.1f} MB/s"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        total = total_frames if total_frames is not None else duration
        self.task = self.progress.add_task(
            "acquiring", total=total, count="0", rate=0.0, detail="ring 0/0 drops 0"
        )
        self.progress.start()

    def update(self, snap: dict[str, Any]) -> None:
        if self.progress is None:
            return
        phase = snap.get("phase", "acquiring")
        written = snap["frames_written"]
        frames = f"{written}/{self.total_frames}" if self.total_frames else f"{written} frames"
        if phase == "acquiring":
            done = (
                written
                if self.total_frames is not None
                else min(snap["elapsed_s"], self.duration or 0)
            )
            self.progress.update(
                self.task,
                completed=done,
                count=frames,
                rate=snap["mb_per_s"],
                detail=f"ring {snap['ring_occupancy']}/{snap['ring_capacity']} "
                f"drops {snap['frames_dropped']}",
            )
            return
        if self.phase == "acquiring":  # the acquisition is over: its bar ends as it ended
            self.progress.update(
                self.task,
                count=frames,
                completed=written,
                total=written or 1,
                rate=snap["mb_per_s"],
            )
            self.task = self.progress.add_task(
                "flushing", total=None, count=frames, rate=0.0, detail=""
            )
            self.phase = "flushing"
        if phase == "flushing":
            self.progress.update(self.task, count=frames)
        elif phase == "pyramid" and snap.get("pyramid_level"):
            level, levels = snap["pyramid_level"], snap["pyramid_levels"]
            totals = snap.get("pyramid_level_chunks") or []
            while self.level < level:  # levels finished between two snapshots show too
                self._finish_task()
                self.level += 1
                total = totals[self.level - 1] if self.level <= len(totals) else 1
                self.task = self.progress.add_task(
                    f"pyramid {self.level}/{levels}",
                    total=total or 1,
                    completed=total if self.level < level else 0,
                    count=f"{total}/{total} chunks" if self.level < level else "",
                    rate=snap.get("pyramid_mb_per_s", 0.0),
                    detail="",
                )
            done, total = snap["pyramid_chunks_done"], snap["pyramid_chunks_total"]
            self.progress.update(
                self.task,
                completed=done,
                count=f"{done}/{total} chunks",
                rate=snap.get("pyramid_mb_per_s", 0.0),
            )
        elif phase == "done":
            self._finish_task()
            self.phase = "done"

    def _finish_task(self) -> None:
        task = next((t for t in self.progress.tasks if t.id == self.task), None)
        if task is not None:
            self.progress.update(self.task, completed=task.total or 1, total=task.total or 1)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def cmd_acquire(args: argparse.Namespace) -> int:
    from acqwriter.devices import DeviceError, Microscope, run_acquisition, sim_camera_options

    try:
        spec = build_acquisition_spec(args)
    except SpecError as exc:
        print(f"acqwriter acquire: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sim_options = sim_camera_options(spec) if spec.camera == "sim" else {}
    scope = None
    progress = None
    try:
        scope = Microscope.open(spec.camera, **sim_options)
        progress = _Progress(spec.frames, spec.duration, args.quiet or args.json)
        report = run_acquisition(scope, spec, on_progress=progress.update)
    except (SpecError, DeviceError, ValueError) as exc:
        if progress:
            progress.stop()
        print(f"acqwriter acquire: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if scope is not None:
            scope.close()
            del scope
            gc.collect()
    progress.stop()
    for folder in report.summary.created_folders:
        print(f"acqwriter acquire: created folder {folder}", file=sys.stderr)
    if args.json:
        write_out(jsonio.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        write_out(report.summary.describe())
    if not report.ok:
        print(f"acqwriter acquire: incomplete: {report.reason()}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _with_build_progress(work: Any, quiet: bool) -> Any:
    """Run ``work(progress)`` while a bar per pyramid level shows its chunks and rate
    (on stderr, as ``acquire`` shows its phases): building levels can take minutes."""
    import threading

    from acqwriter.pyramid import BuildProgress

    build = BuildProgress()
    done = threading.Event()
    shown: list[_Progress] = []  # made once the first level starts: no empty display

    def show() -> None:
        if not build.level or quiet:
            return
        if not shown:
            shown.append(_Progress(None, None, quiet))
            shown[0].phase = "flushing"  # no acquisition bar: levels only
            shown[0].progress.remove_task(shown[0].task)
        shown[0].update({"phase": "pyramid", "frames_written": 0, **build.snapshot()})

    def feed() -> None:
        while not done.wait(0.2):
            show()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        return work(build)
    finally:
        done.set()
        feeder.join()
        show()  # the last level as it ended
        if shown:
            shown[0].stop()


def cmd_pyramid(args: argparse.Namespace) -> int:
    from acqwriter.pyramid import rebuild_pyramid

    try:
        levels = _with_build_progress(
            lambda build: rebuild_pyramid(args.path, threads=args.threads, progress=build),
            args.quiet,
        )
    except (FileNotFoundError, ValueError, SpecError) as exc:
        print(f"acqwriter pyramid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a read-only filesystem: the dataset is as before
        print(
            f"acqwriter pyramid: {args.path}: cannot write the pyramid "
            f"({exc.strerror or exc}); the dataset keeps its levels as they were",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    write_out(f"{args.path}: {len(levels)} level(s): " + ", ".join(lv.path for lv in levels))
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    from acqwriter.recover import RecoverError, recover

    try:
        account = _with_build_progress(
            lambda build: recover(
                args.path, threads=args.threads, verify=args.verify, progress=build
            ),
            args.quiet or args.json,
        )
    except RecoverError as exc:
        print(f"acqwriter recover: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        write_out(jsonio.dumps(account, indent=2))
    elif account["nothing_to_recover"]:
        write_out(
            f"{account['path']}: nothing to recover: its writer finished it "
            f"(state {account['state']}); nothing was changed"
        )
    else:
        write_out(
            f"{account['path']}: recovered {account['frames']} frame(s) "
            f"({account['rows']} along the first axis, was {account['rows_before']}), "
            f"{account['frames_dropped']} flagged dropped, "
            f"{account['uncommitted_chunks_removed']} uncommitted chunk(s) removed, "
            f"{account['pyramid_levels']} level(s)"
        )
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from acqwriter.info import dataset_info, format_info

    try:
        info = dataset_info(args.path)
    except (FileNotFoundError, ValueError) as exc:
        print(f"acqwriter info: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write_out(jsonio.dumps(info, indent=2) if args.json else format_info(info))
    return EXIT_OK


def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="acqwriter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"acqwriter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_acquire(sub)
    p = sub.add_parser("pyramid", help="build or rebuild the multiscale pyramid of a dataset")
    p.add_argument("path", type=Path)
    p.add_argument("--threads", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_pyramid)
    p = sub.add_parser("recover", help="finish a dataset whose writer crashed (idempotent)")
    p.add_argument("path", type=Path)
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--verify",
        choices=["new", "all"],
        default="new",
        help="decode-check only rows being added (default) or every chunk",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_recover)
    p = sub.add_parser("info", help="shape, levels, codec, ratio and dropped frames of a dataset")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)
    from acqwriter.control.cli import add_daemon_commands

    add_daemon_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # stdout's reader went away; what was done stays done
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
