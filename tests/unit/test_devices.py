"""The devices layer on real pymmcore-plus cores: our Python simulators and the DemoCamera."""

from __future__ import annotations

import time

import numpy as np
import pytest

from acqwriter.acquisition import open_microscope
from acqwriter.devices import (
    CameraFrame,
    CameraTimeout,
    DeviceError,
    LostFrames,
    Microscope,
    SequenceEnded,
    pixel_dtype,
)
from acqwriter.simulators import FRAME_NUMBER_KEY, FrameBank, SimFaults, read_stamp


def drain(camera, n, **kw):
    frames, lost, end = [], [], None
    for event in camera.sequence(n, **kw):
        if isinstance(event, CameraFrame):
            frames.append((event.number, np.array(event.image, copy=True), event.metadata))
        elif isinstance(event, LostFrames):
            lost.append(event)
        elif isinstance(event, SequenceEnded):
            end = event
    return frames, lost, end


@pytest.fixture
def sim(collect_cores):
    scope = open_microscope("sim", shape=(120, 160), dtype="uint16", seed=5)
    collect_cores.append(scope)
    return scope


def test_sim_camera_properties(sim):
    cam = sim.camera
    assert cam.label == "Camera"
    assert cam.shape == (120, 160) and cam.sensor_shape == (120, 160)
    assert cam.dtype == np.uint16 and cam.bit_depth == 16
    cam.exposure_ms = 2.5
    assert cam.exposure_ms == 2.5
    with pytest.raises(DeviceError, match="exposure must be >= 0"):
        cam.exposure_ms = -1
    cam.roi = (10, 20, 64, 32)
    assert cam.roi == (10, 20, 64, 32) and cam.shape == (32, 64)
    assert cam.sensor_shape == (120, 160) and cam.roi == (10, 20, 64, 32)
    cam.roi = None
    cam.binning = 2
    assert cam.binning == 2 and cam.shape == (60, 80)
    # Micro-Manager scales the calibrated pixel size by the binning
    assert sim.pixel_size_um == pytest.approx(1.3)


def test_sim_snap_and_sequence_are_stamped_and_exact(sim):
    cam = sim.camera
    snap = cam.snap()
    assert read_stamp(snap) == 0
    frames, lost, end = drain(cam, 15)
    assert not lost and end == SequenceEnded(15, 15)
    bank = FrameBank((120, 160), "uint16", seed=5)
    for number, image, meta in frames:
        assert read_stamp(image) == number == int(meta[FRAME_NUMBER_KEY])
        np.testing.assert_array_equal(image, bank.frame(number))
    assert [n for n, _, _ in frames] == list(range(15))


@pytest.mark.parametrize(
    ("fps", "n", "populated_frames"),
    [(100.0, None, 100), (100.0, 3, 3), (None, None, 256), (None, 5, 5)],
    ids=["paced-first-second", "paced-n-frames", "unpaced-whole-pool", "unpaced-n-frames"],
)
def test_sim_camera_faults_in_what_it_will_write_before_its_clock_starts(fps, n, populated_frames):
    """A free-running simulated camera writing into fresh memory ran at a third of its rate
    until the core's buffer was faulted in, then burst and overflowed it: before pacing
    starts, the camera faults in the pool behind its first slot, as far as its first
    second of frames (or its n frames) reaches; the whole pool when it is unpaced."""
    import mmap

    from acqwriter.simulators import SimCamera
    from helpers import resident_fraction

    frame_bytes = 256 * 256 * 2
    pool = np.frombuffer(
        mmap.mmap(-1, 256 * frame_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), np.uint8
    )
    offset = 0

    def get_buffer(shape, dtype):
        nonlocal offset
        out = pool[offset : offset + frame_bytes].view(dtype).reshape(shape)
        offset += frame_bytes
        return out

    cam = SimCamera((256, 256), "uint16", fps=fps, seed=2)
    frames = cam.start_sequence(n, get_buffer)
    next(frames)
    assert resident_fraction(pool[: populated_frames * frame_bytes]) == pytest.approx(1.0)
    if populated_frames < 256:  # and not more than that (one frame: the one just written)
        assert resident_fraction(pool[(populated_frames + 1) * frame_bytes :]) < 0.05
    rest = [next(frames), next(frames)]
    frames.close()
    assert len(rest) == 2 and offset == 3 * frame_bytes  # one slot per frame, none wasted
    for number in range(3):
        got = pool[number * frame_bytes : (number + 1) * frame_bytes].view(np.uint16)
        np.testing.assert_array_equal(got.reshape(256, 256), cam.expected_frame(number))


def test_camera_side_gaps_are_reported_with_numbers(sim):
    sim.py_devices["Camera"].faults = SimFaults(skip={3, 4, 9})
    frames, lost, end = drain(sim.camera, 12)
    assert [n for n, _, _ in frames] == [0, 1, 2, 5, 6, 7, 8, 10, 11]
    assert [(ev.numbers, ev.reason) for ev in lost] == [([3, 4], "camera"), ([9], "camera")]
    assert end.delivered == 12


def test_silent_camera_times_out_with_clear_error(sim):
    sim.py_devices["Camera"].faults = SimFaults(stop_after=4)
    got = []
    with pytest.raises(
        CameraTimeout, match=r"delivered no frame for 0.5 s after 4 frame\(s\) of 10"
    ):
        for event in sim.camera.sequence(10, frame_timeout_s=0.5, first_frame_timeout_s=0.5):
            if isinstance(event, CameraFrame):
                got.append(event.number)
    assert got == [0, 1, 2, 3]
    assert not sim.core.isSequenceRunning()


def test_stages_move_and_wait(collect_cores):
    scope = open_microscope("sim", shape=(16, 16))
    collect_cores.append(scope)
    scope.xy_stage.move(100.5, -20.0)
    scope.z_stage.move(12.25)
    assert scope.xy_stage.position == (100.5, -20.0)
    assert scope.z_stage.position == 12.25
    assert scope.positions() == {"x_um": 100.5, "y_um": -20.0, "z_um": 12.25}


def test_pixel_type_mapping_refuses_unsupported():
    assert pixel_dtype(1, 1) == np.uint8
    assert pixel_dtype(2, 1) == np.uint16
    assert pixel_dtype(4, 1) == np.uint32
    with pytest.raises(DeviceError, match=r"4 components .* not supported"):
        pixel_dtype(4, 4, "camera 'RGB'")
    with pytest.raises(DeviceError, match="64-bit pixels are not supported"):
        pixel_dtype(8, 1)


def test_open_refuses_unknown_sources(tmp_path):
    with pytest.raises(DeviceError, match="neither 'sim', 'demo' nor an existing"):
        open_microscope(str(tmp_path / "missing.cfg"))
    bad = tmp_path / "bad.cfg"
    bad.write_text("Device,Cam,NoSuchAdapter,NoSuchCamera\n")
    with pytest.raises(DeviceError, match="cannot load Micro-Manager config"):
        open_microscope(str(bad))
    # the hardware layer opens configuration files, and names the way to a simulator
    with pytest.raises(DeviceError, match="cannot load Micro-Manager config"):
        Microscope.open(str(bad))
    with pytest.raises(DeviceError, match=r"open_microscope\('sim'\)"):
        Microscope.open("sim")
    with pytest.raises(DeviceError, match="not an existing Micro-Manager config file"):
        Microscope.from_config(tmp_path / "missing.cfg")


def test_demo_camera_sequence(collect_cores):
    scope = open_microscope("demo")
    collect_cores.append(scope)
    cam = scope.camera
    assert cam.shape == (512, 512) and cam.dtype == np.uint16
    cam.exposure_ms = 1
    frames, lost, end = drain(cam, 10)
    assert not lost and end.delivered == 10
    assert [n for n, _, _ in frames] == list(range(10))
    assert all(meta["Camera"] == "Camera" for _, _, meta in frames)
    assert scope.xy_stage is not None and scope.z_stage is not None
    scope.z_stage.move(5.0)
    assert scope.z_stage.position == pytest.approx(5.0)


def _slow_drain(camera, n, delay_s):
    numbers, lost = [], []
    for event in camera.sequence(n):
        if isinstance(event, CameraFrame):
            assert read_stamp(event.image) == event.number
            numbers.append(event.number)
            time.sleep(delay_s)
        elif isinstance(event, LostFrames):
            lost.append(event)
    return numbers, lost


def test_free_running_camera_overflow_is_reported_as_buffer_overflow(collect_cores):
    scope = open_microscope("sim", shape=(256, 256), fps=400)
    collect_cores.append(scope)
    scope.core.setCircularBufferMemoryFootprint(1)  # 8 frames of 128 KiB
    numbers, lost = _slow_drain(scope.camera, 60, 0.02)
    assert lost, "a consumer 8x slower than the camera must lose frames"
    assert {ev.reason for ev in lost} == {"buffer_overflow"}
    missing = sorted(n for ev in lost for n in ev.numbers)
    assert sorted(numbers + missing) == list(range(max(numbers) + 1))  # every number accounted


def test_unpaced_camera_waits_for_room_instead_of_overwriting(collect_cores):
    scope = open_microscope("sim", shape=(256, 256))
    collect_cores.append(scope)
    scope.core.setCircularBufferMemoryFootprint(1)
    numbers, lost = _slow_drain(scope.camera, 30, 0.01)
    assert not lost and numbers == list(range(30))


def test_demo_camera_colour_pixel_type_is_refused(collect_cores):
    scope = open_microscope("demo")
    collect_cores.append(scope)
    scope.core.setProperty("Camera", "PixelType", "32bitRGB")
    with pytest.raises(DeviceError, match=r"components .* not supported; expected 8, 16 or 32-bit"):
        _ = scope.camera.dtype
    scope.core.setProperty("Camera", "PixelType", "8bit")
    assert scope.camera.dtype == np.uint8 and scope.camera.bit_depth == 8


def test_python_camera_buffer_is_drained_under_its_lock():
    """pymmcore-plus 0.18.1's SequenceBuffer.pop_next copied a frame and gave its bytes
    back after releasing the lock, so a camera overflowing the buffer meanwhile could
    write another frame's pixels over it (seen in CI: index 83 held frame 115's
    pixels). acqwriter.devices installs a pop_next that does both under the lock."""
    from pymmcore_plus.experimental.unicore.core._sequence_buffer import SequenceBuffer

    import acqwriter.devices  # noqa: F401  (installs the fix)
    from acqwriter.devices import sequence_buffer_fix

    assert sequence_buffer_fix.install()
    buf = SequenceBuffer(size_mb=1)
    locked_at_evict: list[bool] = []
    real_evict = buf._evict_slot

    def evict(slot):
        locked_at_evict.append(buf._lock.locked())
        real_evict(slot)

    buf._evict_slot = evict
    for i in range(3):
        buf.insert_data(np.full((64, 64), i, np.uint16), {"n": i})
    frame, md = buf.pop_next()
    assert md["n"] == 0 and (frame == 0).all()
    out = np.empty((64, 64), np.uint16)
    frame, md = buf.pop_next(out=out)
    assert frame is out and md["n"] == 1 and (out == 1).all()
    assert locked_at_evict == [True, True]
    assert buf.used_bytes == 64 * 64 * 2 and len(buf) == 1
    buf.pop_next()
    assert buf.pop_next() is None and buf.used_bytes == 0
