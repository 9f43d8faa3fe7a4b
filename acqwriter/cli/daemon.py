"""Command-line front ends of the daemon: ``serve``, ``ctl …`` and ``keys``.

``acqwriter serve`` runs :class:`~acqwriter.control.server.Server` in the foreground
(SIGINT/SIGTERM: finish the running acquisition, then exit; a second signal aborts it).
``acqwriter ctl COMMAND`` sends one request with :class:`~acqwriter.control.Client` and
prints the result as JSON; ``ctl configure`` takes the same options and spec files as
``acqwriter acquire``; ``ctl stop`` waits for the finished dataset and prints its
summary; ``ctl watch`` follows the event stream with a progress bar.

Exit status of ``ctl``: 0 success; 1 the server answered with an error (``code: message``
on stderr); 2 invalid options; 3 no answer (daemon not running, wrong keys, timeout).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from acqwriter import jsonio
from acqwriter.control.protocol import DEFAULT_CONTROL, DEFAULT_EVENTS, ControlError
from acqwriter.spec.model import SpecError

EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3


def add_daemon_commands(sub: argparse._SubParsersAction) -> None:
    from acqwriter.cli.options import add_spec_options

    p = sub.add_parser("serve", help="run the acquisition daemon (ZeroMQ control + event sockets)")
    p.add_argument(
        "--control", default=DEFAULT_CONTROL, help=f"ROUTER endpoint (default {DEFAULT_CONTROL})"
    )
    p.add_argument(
        "--events", default=DEFAULT_EVENTS, help=f"PUB endpoint (default {DEFAULT_EVENTS})"
    )
    p.add_argument("--root", type=Path, help="confine output paths to this directory")
    p.add_argument(
        "--object-root",
        help="accept object-store outputs under this URL prefix (s3://bucket/prefix); "
        "credentials from the AWS environment",
    )
    p.add_argument("--camera", default="sim", help="camera 'devices' opens before any configure")
    p.add_argument(
        "--curve-secret", type=Path, help="server secret key file (from 'acqwriter keys')"
    )
    p.add_argument("--curve-clients", type=Path, help="directory of authorised client public keys")
    p.add_argument(
        "--progress-interval", type=float, default=0.5, help="seconds between progress events"
    )
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("keys", help="create a CURVE key pair (NAME.key, NAME.key_secret)")
    p.add_argument("directory", type=Path)
    p.add_argument("--name", default="acqwriter", help="file name stem (e.g. server, client-lab1)")
    p.set_defaults(handler=cmd_keys)

    ctl = sub.add_parser("ctl", help="send a command to a running daemon")
    ctl.add_argument("--control", default=DEFAULT_CONTROL)
    ctl.add_argument("--events", default=DEFAULT_EVENTS)
    ctl.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    ctl.add_argument("--curve-secret", type=Path, help="client secret key file")
    ctl.add_argument("--curve-server", type=Path, help="server public key file")
    csub = ctl.add_subparsers(dest="ctl_command", required=True)
    for name in ("ping", "version", "schema", "status", "start", "abort"):
        csub.add_parser(name).set_defaults(handler=cmd_ctl)
    p = csub.add_parser("devices")
    p.add_argument("--camera", help="open this source first ('sim', 'demo', config path)")
    p.set_defaults(handler=cmd_ctl)
    p = csub.add_parser("configure", help="spec file and/or the options of 'acqwriter acquire'")
    p.add_argument("spec_file", nargs="?", type=Path, help="spec file (.json/.yaml/.toml)")
    add_spec_options(p)
    p.add_argument("--json", action="store_true", help="print the daemon's whole reply")
    p.set_defaults(handler=cmd_ctl)
    p = csub.add_parser("stop", help="finish the dataset (pyramid included) and print its summary")
    p.add_argument("--no-wait", action="store_true", help="return at once")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_ctl)
    p = csub.add_parser("shutdown")
    p.add_argument("--abort", action="store_true", help="abort a running acquisition first")
    p.set_defaults(handler=cmd_ctl)
    p = csub.add_parser("view", help="a window on what the daemon writes (or wrote last)")
    p.add_argument("--image", help="the image of a plate or collection (default: the first)")
    p.set_defaults(handler=cmd_ctl)
    p = csub.add_parser("watch", help="follow the event stream with a progress bar")
    p.add_argument("--json", action="store_true", help="print events as JSON lines instead")
    p.set_defaults(handler=cmd_ctl)


def cmd_serve(args: argparse.Namespace) -> int:
    from acqwriter.control.security import CurveServer
    from acqwriter.control.server import Server

    curve = None
    if args.curve_secret or args.curve_clients:
        if not (args.curve_secret and args.curve_clients):
            print(
                "acqwriter serve: CURVE needs both --curve-secret and --curve-clients",
                file=sys.stderr,
            )
            return EXIT_USAGE
        curve = CurveServer(args.curve_secret, args.curve_clients)
    try:
        server = Server(
            args.control,
            args.events,
            root=args.root,
            object_root=args.object_root,
            curve=curve,
            default_camera=args.camera,
            progress_interval_s=args.progress_interval,
        )
        server.bind()
    except (ValueError, OSError) as exc:
        print(f"acqwriter serve: refusing to start: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def on_signal(signum: int, frame: Any) -> None:
        server.request_shutdown()  # a second signal aborts (see request_shutdown)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"acqwriter daemon: control {args.control}, events {args.events}"
        + (", CURVE" if curve else "")
        + (f", root {args.root}" if args.root else "")
        + (f", object root {args.object_root}" if args.object_root else ""),
        file=sys.stderr,
        flush=True,
    )
    return server.serve_forever()


def cmd_keys(args: argparse.Namespace) -> int:
    from acqwriter.control.security import create_keypair

    public, secret = create_keypair(args.directory, args.name)
    print(f"public key: {public}\nsecret key: {secret}  (keep private)")
    return EXIT_OK


def _ctl_params(args: argparse.Namespace) -> dict[str, Any]:
    from acqwriter.cli.options import spec_mapping

    command = args.ctl_command
    if command == "configure":
        if args.spec_file is not None and args.spec is None:
            args.spec = args.spec_file
        return spec_mapping(args)
    if command == "devices":
        return {"camera": args.camera} if args.camera else {}
    if command == "shutdown":
        return {"abort": args.abort}
    if command == "stop":
        return {"wait": not args.no_wait, "timeout_s": 3600.0}
    return {}


def cmd_ctl(args: argparse.Namespace) -> int:
    from acqwriter.control.client import Client

    try:
        params = _ctl_params(args)
    except SpecError as exc:
        print(f"acqwriter ctl {args.ctl_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        client = Client(
            args.control,
            args.events,
            timeout_s=args.timeout,
            curve_secret=args.curve_secret,
            curve_server=args.curve_server,
        )
    except (ValueError, OSError) as exc:
        print(f"acqwriter ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.ctl_command == "watch":
            return _watch(client, args)
        if args.ctl_command == "view":
            return _view(client, args)
        timeout = None
        if args.ctl_command == "stop" and params["wait"]:
            timeout = params["timeout_s"] + 5
        elif args.ctl_command in ("configure", "devices"):
            timeout = max(args.timeout, 60.0)
        result = client.request(args.ctl_command, params, timeout_s=timeout)
    except ControlError as exc:
        print(f"acqwriter ctl {args.ctl_command}: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_SERVER_ERROR
    except TimeoutError as exc:
        print(f"acqwriter ctl {args.ctl_command}: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    finally:
        client.close()
    if args.ctl_command == "stop" and "summary" in (result or {}) and not args.json:
        from acqwriter.format.summary import DatasetSummary, Summary

        model = DatasetSummary if "images" in result["summary"] else Summary
        print(model.model_validate(result["summary"]).describe())
        if not result.get("ok", True):
            print(f"incomplete: {result.get('reason')}", file=sys.stderr)
    elif (
        args.ctl_command == "configure"
        and not getattr(args, "json", False)
        and isinstance(result, dict)
        and "acquires" in result
    ):
        from acqwriter.acquisition.preview import describe_plan

        print(describe_plan(result["acquires"]))
    else:
        print(jsonio.dumps(result, indent=2))
    return EXIT_OK


def _view(client: Any, args: argparse.Namespace) -> int:
    """A window on the dataset the daemon is writing (or wrote last), refreshed when the
    daemon publishes progress (the window also re-reads the extent on its own)."""
    import threading
    import time

    from acqwriter.viewer.window import missing_extra, show

    missing = missing_extra()
    if missing is not None:
        print(f"acqwriter ctl view: {missing}", file=sys.stderr)
        return EXIT_USAGE
    status = client.status()
    spec, last = status.get("spec"), status.get("last_summary")
    out = (spec or {}).get("out") or (last or {}).get("path")
    if not out:
        print("acqwriter ctl view: the daemon has no dataset to show yet", file=sys.stderr)
        return EXIT_SERVER_ERROR
    deadline = time.monotonic() + args.timeout  # a configured run starts writing later
    while not Path(out, "zarr.json").exists() and not Path(out, ".zattrs").exists():
        if time.monotonic() > deadline:
            print(f"acqwriter ctl view: {out} does not exist yet", file=sys.stderr)
            return EXIT_SERVER_ERROR
        time.sleep(0.1)
    wake, done = threading.Event(), threading.Event()

    def listen() -> None:
        for topic, _ in client.events(("progress", "state", "summary"), tick_s=0.2):
            if done.is_set():
                return
            if topic:
                wake.set()

    listener = threading.Thread(target=listen, name="acqwriter-view-events", daemon=True)
    listener.start()
    try:
        return show(out, args.image, wake=wake, interval_s=1.0, title=f"daemon: {out}")
    finally:
        done.set()
        listener.join(timeout=2)


def _watch(client: Any, args: argparse.Namespace) -> int:
    """Follow events until a summary arrives (Ctrl-C to leave earlier).

    An acquisition may end before the subscription reaches the server (a short one
    ends while ``watch`` starts), and its summary event is then never seen: every
    half second of silence, the server's status is asked, and an acquisition that is
    over is reported from its ``last_report`` (the same report the event carries)."""
    from acqwriter.cli.progress import ProgressDisplay
    from acqwriter.format.summary import Summary

    status = client.status()
    spec = status.get("spec") or {}
    progress = (
        None
        if args.json
        else ProgressDisplay(spec.get("frames"), spec.get("duration"), quiet=False)
    )
    if progress is not None:
        progress.console.print(f"state: {status['state']}", highlight=False)

    def finished(report: dict[str, Any]) -> int:
        if progress is not None:
            progress.stop()
            print(Summary.model_validate(report["summary"]).describe())
        return EXIT_OK if report.get("ok") else EXIT_SERVER_ERROR

    try:
        for topic, event in client.events(tick_s=0.5):
            if not topic:  # silence: did it end before we subscribed?
                status = client.status()
                if status["state"] in ("acquiring", "finalizing", "configured"):
                    continue
                if status.get("last_report") is not None:
                    if args.json:
                        print(jsonio.dumps(status["last_report"]), flush=True)
                    return finished(status["last_report"])
                if status["state"] == "error":
                    if progress is not None:
                        progress.console.print(f"error: {status.get('error')}", highlight=False)
                    return EXIT_SERVER_ERROR
                continue
            if args.json:
                print(jsonio.dumps(event), flush=True)
            elif topic == "progress":
                progress.update(event)
            elif topic in ("warning", "error"):
                progress.console.print(f"{topic}: {event.get('message')}", highlight=False)
            if topic == "summary":
                return finished(event)
            if topic == "state" and event.get("state") == "shutdown":
                return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if progress is not None:
            progress.stop()
    return EXIT_OK
