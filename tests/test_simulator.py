from __future__ import annotations

import numpy as np
from scipy.signal import butter, hilbert, sosfiltfilt

from pipeline.config import SimulatorConfig
from pipeline.ingest.simulator import GearboxGeometry, GearboxSimulator

# One fixed operating point, clean and severe, so the physics is visible in single recordings.
CLEAN = dict(
    fs=12800,
    duration_s=4.0,
    recordings_per_class=3,
    rpm=(1500, 1500),
    load=(0.6, 0.6),
    snr_db=(20, 20),
    resonance_hz=(3000, 3000),
    severity=(1.0, 1.0),
)


def _envelope_spectrum(x: np.ndarray, fs: float, band: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    sos = butter(4, band, btype="bandpass", fs=fs, output="sos")
    env = np.abs(hilbert(sosfiltfilt(sos, x)))
    env -= env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(len(env))))
    return np.fft.rfftfreq(len(env), 1 / fs), spec


def _line_strength(freqs, spec, f0, rel=0.03):
    """Peak near f0 divided by the median of the 5-400 Hz envelope spectrum."""
    near = (freqs > f0 * (1 - rel)) & (freqs < f0 * (1 + rel))
    ref = (freqs > 5) & (freqs < 400)
    return spec[near].max() / np.median(spec[ref])


def test_deterministic_and_independent_of_other_recordings():
    a = GearboxSimulator(SimulatorConfig(recordings_per_class=3, duration_s=0.5)).recordings()
    b = GearboxSimulator(SimulatorConfig(recordings_per_class=3, duration_s=0.5)).recordings()
    assert [r.id for r in a] == [r.id for r in b]
    assert all(np.array_equal(x.signal, y.signal) for x, y in zip(a, b))
    more = GearboxSimulator(SimulatorConfig(recordings_per_class=5, duration_s=0.5)).simulate("wear", 2)
    assert np.array_equal(more.signal, next(r for r in a if r.id == "wear-0002").signal)
    other = GearboxSimulator(SimulatorConfig(recordings_per_class=3, duration_s=0.5, seed=1)).recordings()
    assert not np.array_equal(a[0].signal, other[0].signal)


def test_recordings_have_ids_conditions_and_varying_conditions():
    recs = GearboxSimulator(SimulatorConfig(recordings_per_class=4, duration_s=0.25)).recordings()
    assert len(recs) == 5 * 4 and len({r.id for r in recs}) == 20
    assert {r.label for r in recs} == {"healthy", "tooth_crack", "wear", "outer_race", "inner_race"}
    for key in ("rpm", "load", "snr_db", "resonance_hz"):
        values = [r.condition[key] for r in recs]
        assert len(set(values)) == len(values), key
    assert all(r.signal.shape == (1, 3200) and r.signal.dtype == np.float32 for r in recs)


def test_bearing_faults_show_their_defect_frequency_in_the_envelope_spectrum():
    sim = GearboxSimulator(SimulatorConfig(**CLEAN))
    geo = GearboxGeometry()
    shaft = 1500 / 60
    band = (2000, 4000)
    freqs, outer = _envelope_spectrum(sim.simulate("outer_race", 0).signal[0], 12800, band)
    _, inner = _envelope_spectrum(sim.simulate("inner_race", 0).signal[0], 12800, band)
    _, healthy = _envelope_spectrum(sim.simulate("healthy", 0).signal[0], 12800, band)
    assert _line_strength(freqs, outer, geo.bpfo(shaft)) > 10
    assert _line_strength(freqs, inner, geo.bpfi(shaft)) > 10
    assert _line_strength(freqs, healthy, geo.bpfo(shaft)) < 5
    # The inner-race impacts are modulated by the shaft: sidebands at BPFI +- shaft rate.
    assert _line_strength(freqs, inner, geo.bpfi(shaft) - shaft, rel=0.02) > 3
    # Outer race: BPFO dominates the 5-400 Hz envelope spectrum.
    ref = (freqs > 5) & (freqs < 400)
    assert abs(freqs[ref][np.argmax(outer[ref])] - geo.bpfo(shaft)) < 0.03 * geo.bpfo(shaft)


def test_gear_faults():
    sim = GearboxSimulator(SimulatorConfig(**CLEAN))
    shaft = 1500 / 60
    mesh = GearboxGeometry().pinion_teeth * shaft
    # Tooth crack: one impact per revolution -> a shaft-rate line in the envelope of the resonance band.
    freqs, crack = _envelope_spectrum(sim.simulate("tooth_crack", 0).signal[0], 12800, (2000, 4000))
    assert _line_strength(freqs, crack, shaft) > 10

    def harmonic_ratio(label):
        x = sim.simulate(label, 0).signal[0]
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        f = np.fft.rfftfreq(len(x), 1 / 12800)
        amp = lambda f0: spec[np.abs(f - f0) < 3].max()  # noqa: E731
        return amp(2 * mesh) / amp(mesh), amp(mesh + shaft) / amp(mesh)

    wear_h2, wear_side = harmonic_ratio("wear")
    ok_h2, ok_side = harmonic_ratio("healthy")
    assert wear_h2 > 1.5 * ok_h2  # raised mesh harmonics
    assert wear_side > 3 * ok_side  # sidebands at mesh +- shaft
