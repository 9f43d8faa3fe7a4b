"""The ``acqwriter`` command line: ``acquire``, ``pyramid``, ``recover``, ``info``, and
the daemon's ``serve``, ``ctl …`` and ``keys`` (:mod:`acqwriter.cli.daemon`).

``acquire`` builds an :class:`AcquisitionSpec` from a spec file (``--spec``) overlaid
with the options given on the command line (same field names), opens the camera
(:class:`acqwriter.devices.Microscope`), runs
:func:`acqwriter.acquisition.run_acquisition` with a live progress bar on stderr, and
prints the summary (``--json``: as JSON on stdout).

Exit status: 0 only when every requested frame was written; 1 when the acquisition
ran but is incomplete (drops, camera or writer error — the reason is printed); 2 for
invalid input (spec, options, paths) before anything was acquired.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from acqwriter import jsonio
from acqwriter._version import __version__
from acqwriter.cli.options import add_spec_options, spec_mapping
from acqwriter.cli.progress import ProgressDisplay
from acqwriter.spec.location import parse_object_url
from acqwriter.spec.model import SpecError

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
        from acqwriter.validation import did_you_mean

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
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the writer's plan (images, levels, frame slots, threads, memory, disk) "
        "and exit without acquiring (--json: as JSON)",
    )
    p.set_defaults(handler=cmd_acquire)


def build_acquisition_spec(args: argparse.Namespace):  # -> AcquisitionSpec
    """The validated :class:`AcquisitionSpec` from ``--spec`` and the options."""
    from acqwriter.acquisition.spec import AcquisitionSpec

    return AcquisitionSpec.parse(spec_mapping(args))


def cmd_acquire(args: argparse.Namespace) -> int:
    from acqwriter.acquisition import open_microscope, run_acquisition, sim_camera_options
    from acqwriter.acquisition.preview import check_sequence, writer_plan
    from acqwriter.devices import DeviceError

    try:
        spec = build_acquisition_spec(args)
    except SpecError as exc:
        print(f"acqwriter acquire: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sim_options = sim_camera_options(spec) if spec.camera == "sim" else {}
    scope = None
    progress = None
    try:
        scope = open_microscope(spec.camera, **sim_options)
        check_sequence(scope, spec)
        if args.plan:
            plan = writer_plan(scope, spec)
            write_out(jsonio.dumps(plan.to_dict(), indent=2) if args.json else plan.describe())
            return EXIT_OK
        frames = None if spec.frames is None else spec.frames * spec.position_count
        progress = ProgressDisplay(frames, spec.duration, args.quiet or args.json)
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


def _add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="a window on a dataset, finished or still being written",
        description="Open a viewer window (ndv) on a dataset: it follows a running writer "
        "(never locking or writing it) and shows what a finished or crashed one left.",
    )
    p.add_argument("path", type=_local_path, help="the dataset (.ome.zarr folder)")
    p.add_argument("--image", help="the image of a plate or collection (default: the first)")
    p.add_argument(
        "--interval", type=float, default=0.2, help="seconds between reads of the extent"
    )
    p.set_defaults(handler=cmd_view)


def _local_path(text: str) -> Path:
    """A dataset to watch: a filesystem path. Object-store URLs are written (``acquire``,
    ``open_stream``, ``MDAWriter``), read by ``info``, given levels by ``pyramid`` and
    finished by ``recover``."""
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"{text}: expected a filesystem path; view does not take object-store URLs"
        )
    return Path(text)


def _count(text: str) -> int:
    """A number of threads or processes: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _mib(text: str) -> float:
    """A size in MiB: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected MiB > 0, got {text!r}")
    return value


def _dataset_location(text: str) -> str | Path:
    """A dataset to read: a filesystem path, or an object-store URL (checked)."""
    if "://" in text:
        try:
            return parse_object_url(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return Path(text)


def cmd_view(args: argparse.Namespace) -> int:
    from acqwriter.viewer.follow import open_image
    from acqwriter.viewer.window import missing_extra, show

    missing = missing_extra()
    if missing is not None:
        print(f"acqwriter view: {missing}", file=sys.stderr)
        return EXIT_USAGE
    if not 0.05 <= args.interval <= 60:
        print("acqwriter view: --interval: expected 0.05 to 60 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        open_image(args.path, args.image)  # a bad path or image: said before any window
    except (ValueError, OSError) as exc:
        print(f"acqwriter view: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return show(args.path, args.image, interval_s=args.interval)


def _with_build_progress(work: Any, quiet: bool) -> Any:
    """Run ``work(progress)`` while a bar per pyramid level shows its chunks and rate
    (on stderr, as ``acquire`` shows its phases): building levels can take minutes."""
    import threading

    from acqwriter.post.pyramid import BuildProgress

    build = BuildProgress()
    done = threading.Event()
    shown: list[ProgressDisplay] = []  # made once the first level starts: no empty display

    def show() -> None:
        if not build.level or quiet:
            return
        if not shown:
            shown.append(ProgressDisplay(None, None, quiet))
            shown[0].start_levels_only()
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


def _cluster_stopped(path: str, exc: BaseException) -> int:
    first = str(exc).splitlines()[0] if str(exc) else ""
    print(
        f"acqwriter pyramid: {path}: the cluster build stopped ({type(exc).__name__}: "
        f"{first}); the levels listed are whole: run the same command again to resume",
        file=sys.stderr,
    )
    return EXIT_INCOMPLETE


def cmd_pyramid(args: argparse.Namespace) -> int:
    from acqwriter.cli.cluster import open_cluster
    from acqwriter.post.pyramid import build_pyramid

    notes: list[str] = []
    try:
        cluster = open_cluster(args)
    except (ImportError, OSError, ValueError) as exc:
        print(f"acqwriter pyramid: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def build(progress: Any) -> Any:
        try:
            return build_pyramid(
                args.path, threads=args.threads, progress=progress, levels=args.levels,
                method=args.method, client=cluster.client if cluster else None,
                task_bytes=int(args.task_mb * 2**20) if args.task_mb else None,
            )  # fmt: skip
        finally:
            notes.extend(progress.notes)
            if cluster is not None:
                cluster.close()

    try:
        levels = _with_build_progress(build, args.quiet)
    except (FileNotFoundError, ValueError, SpecError) as exc:
        print(f"acqwriter pyramid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a read-only filesystem: the dataset is as before
        if cluster is not None and type(exc).__module__.startswith("distributed"):
            return _cluster_stopped(args.path, exc)  # the connection to the cluster closed
        print(
            f"acqwriter pyramid: {args.path}: cannot write the pyramid "
            f"({exc.strerror or exc}); the dataset keeps its levels as they were",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    except Exception as exc:  # the cluster's: a task failed on every worker it tried,
        if cluster is None:  # or the scheduler was lost (ClusterLost)
            raise
        return _cluster_stopped(args.path, exc)
    write_out(f"{args.path}: {len(levels)} level(s): " + ", ".join(lv.path for lv in levels))
    for note in notes:
        write_out(note)
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    from acqwriter.post.recover import RecoverError, RecoverWriteError, recover

    try:
        account = _with_build_progress(
            lambda build: recover(
                args.path, threads=args.threads, verify=args.verify, progress=build
            ),
            args.quiet or args.json,
        )
    except RecoverError as exc:
        print(f"acqwriter recover: {exc}", file=sys.stderr)
        # the dataset could not be written (exit 1, as an incomplete acquisition) or
        # is not one recover can work on (exit 2)
        return EXIT_INCOMPLETE if isinstance(exc, RecoverWriteError) else EXIT_USAGE
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
    from acqwriter.post.info import dataset_info, format_info

    try:
        info = dataset_info(args.path)
    except (FileNotFoundError, ValueError) as exc:
        print(f"acqwriter info: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write_out(jsonio.dumps(info, indent=2) if args.json else format_info(info))
    return EXIT_OK


def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="acqwriter",
        description="Stream microscope camera frames to OME-Zarr while the acquisition "
        "runs; finish, inspect and serve datasets.",
    )
    parser.add_argument("--version", action="version", version=f"acqwriter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_acquire(sub)
    p = sub.add_parser("pyramid", help="build or rebuild the multiscale pyramid of a dataset")
    p.add_argument("path", type=_dataset_location)
    p.add_argument("--threads", type=_count)
    p.add_argument("--levels", type=int, help="levels to build, level 0 included")
    p.add_argument("--method", choices=["mean", "nearest"], help="how lower levels are made")
    p.add_argument(
        "--workers", type=_count, help="build on a local Dask cluster of this many processes"
    )
    p.add_argument("--scheduler", help="build on a running Dask cluster (tcp://host:8786)")
    p.add_argument(
        "--task-mb", type=_mib, help="output per cluster task, MiB (default 64): its memory"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_pyramid)
    p = sub.add_parser("recover", help="finish a dataset whose writer crashed (idempotent)")
    p.add_argument("path", type=_dataset_location, help="a folder, or s3://bucket/prefix")
    p.add_argument("--threads", type=_count)
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
    p.add_argument("path", type=_dataset_location, help="a folder, or s3://bucket/prefix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)
    _add_view(sub)
    from acqwriter.cli.daemon import add_daemon_commands

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
