"""A physics-based vibration simulator of a one-stage gearbox with rolling-element bearings.

The accelerometer sees the gear mesh (tooth-mesh frequency and its harmonics, modulated by the
shafts), shaft harmonics, a structural resonance excited by impacts, and sensor noise. Faults:

- ``tooth_crack``: a local gear fault. Once per revolution of the pinion the cracked tooth meshes:
  an impulse that rings the structural resonance, plus a short amplitude dip and phase shift of
  the mesh (amplitude/phase modulation at the pinion's shaft rate).
- ``wear``: distributed gear wear. Raised mesh harmonics and sidebands at mesh +- k * shaft rate.
- ``outer_race``: impulses at BPFO (a fixed defect, constant amplitude) ringing the resonance,
  with 1-2 % random slip between impacts.
- ``inner_race``: impulses at BPFI, amplitude modulated at the shaft rate as the defect rotates
  through the load zone, with slip.

Shaft speed, load, noise level (SNR), resonance frequency and fault severity are drawn per
recording from the configured ranges. Every recording is generated from its own seed
``(seed, class index, recording index)``, so it does not change when other settings
(number of recordings, other classes) change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from pipeline.config import FAULT_CLASSES, SimulatorConfig
from pipeline.ingest.recording import Recording


@dataclass(frozen=True)
class GearboxGeometry:
    """Fixed machine geometry: tooth counts and bearing dimensions."""

    pinion_teeth: int = 23
    gear_teeth: int = 61
    n_balls: int = 9
    ball_to_pitch: float = 0.21  # ball diameter / pitch diameter
    contact_angle_rad: float = 0.0

    def bpfo(self, shaft_hz: float) -> float:
        """Ball-pass frequency of the outer race."""
        return self.n_balls / 2 * shaft_hz * (1 - self.ball_to_pitch * np.cos(self.contact_angle_rad))

    def bpfi(self, shaft_hz: float) -> float:
        """Ball-pass frequency of the inner race."""
        return self.n_balls / 2 * shaft_hz * (1 + self.ball_to_pitch * np.cos(self.contact_angle_rad))


class GearboxSimulator:
    """Generates labelled recordings; see the module docstring for the physics.

    Args:
        config: sample rate, duration, recordings per class and the ranges of the conditions.
        geometry: gear and bearing geometry (defaults to a 23:61 stage on 9-ball bearings).
    """

    def __init__(self, config: SimulatorConfig, geometry: GearboxGeometry = GearboxGeometry()) -> None:
        self.config = config
        self.geometry = geometry

    def recordings(self) -> list[Recording]:
        """All recordings: `recordings_per_class` of every configured class."""
        return [
            self.simulate(label, index)
            for label in self.config.classes
            for index in range(self.config.recordings_per_class)
        ]

    def simulate(self, label: str, index: int) -> Recording:
        """One recording of class `label`; deterministic in (seed, label, index)."""
        if label not in FAULT_CLASSES:
            raise ValueError(f"unknown class {label!r}; the simulator knows {list(FAULT_CLASSES)}")
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, FAULT_CLASSES.index(label), index])
        cond = {
            "rpm": float(rng.uniform(*cfg.rpm)),
            "load": float(rng.uniform(*cfg.load)),
            "snr_db": float(rng.uniform(*cfg.snr_db)),
            "resonance_hz": float(rng.uniform(*cfg.resonance_hz)),
            "severity": float(rng.uniform(*cfg.severity)) if label != "healthy" else 0.0,
        }
        n = int(round(cfg.duration_s * cfg.fs))
        t = np.arange(n) / cfg.fs
        shaft_hz = cond["rpm"] / 60.0
        # Small speed fluctuation; the phase is the integral of the instantaneous frequency.
        inst_hz = shaft_hz * (
            1 + 0.004 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 2 * np.pi))
        )
        shaft_phase = 2 * np.pi * np.cumsum(inst_hz) / cfg.fs + rng.uniform(0, 2 * np.pi)

        x = self._mesh(label, cond, shaft_phase, rng)
        x += 0.10 * np.cos(shaft_phase + rng.uniform(0, 2 * np.pi))  # imbalance
        x += 0.04 * np.cos(2 * shaft_phase + rng.uniform(0, 2 * np.pi))  # misalignment
        x += self._impacts(label, cond, t, shaft_phase, rng)

        power = float(np.mean(x**2))
        noise_std = np.sqrt(power / 10 ** (cond["snr_db"] / 10))
        x = x + rng.normal(0.0, noise_std, size=n)
        x *= rng.uniform(0.5, 2.0)  # sensor gain and mounting differ between recordings
        return Recording(
            id=f"{label}-{index:04d}",
            label=label,
            signal=x.astype(np.float32)[None, :],
            fs=float(cfg.fs),
            condition=cond,
        )

    # ----------------------------------------------------------------------------- components

    def _mesh(
        self, label: str, cond: dict[str, float], shaft_phase: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        teeth = self.geometry.pinion_teeth
        mesh_phase = teeth * shaft_phase
        amps = np.array([1.0, 0.35, 0.15]) * (0.6 + 0.6 * cond["load"])
        amplitude = np.ones_like(shaft_phase)
        phase_shift = np.zeros_like(shaft_phase)
        severity = cond["severity"]
        if label == "wear":
            amps = amps * (1 + severity * np.array([0.3, 1.5, 2.5]))
            # Wear is uneven around the gear: modulation at the shaft rate gives the sidebands.
            amplitude = amplitude + 0.35 * severity * np.cos(shaft_phase + rng.uniform(0, 2 * np.pi))
        elif label == "tooth_crack":
            # Angular distance to the cracked tooth, wrapped to (-pi, pi]; the dip lasts ~one tooth.
            where = rng.uniform(0, 2 * np.pi)
            delta = np.angle(np.exp(1j * (shaft_phase - where)))
            bump = np.exp(-0.5 * (delta / (2 * np.pi / teeth)) ** 2)
            amplitude = amplitude - 0.5 * severity * bump
            phase_shift = 0.6 * severity * bump
        x = np.zeros_like(shaft_phase)
        for k, a in enumerate(amps, start=1):
            x += a * amplitude * np.cos(k * (mesh_phase + phase_shift) + rng.uniform(0, 2 * np.pi))
        if label == "wear":
            for k in (1, 2):
                for m in (1, 2, 3):
                    side = 0.12 * severity * amps[0] / m
                    x += side * np.cos(k * mesh_phase + m * shaft_phase + rng.uniform(0, 2 * np.pi))
                    x += side * np.cos(k * mesh_phase - m * shaft_phase + rng.uniform(0, 2 * np.pi))
        return x

    def _impacts(
        self,
        label: str,
        cond: dict[str, float],
        t: np.ndarray,
        shaft_phase: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        fs = self.config.fs
        shaft_hz = cond["rpm"] / 60.0
        severity = cond["severity"]
        if label == "tooth_crack":
            # One impact per pinion revolution, when the cracked tooth meshes.
            start = rng.uniform(0, 2 * np.pi)
            revolutions = np.arange(
                np.ceil((shaft_phase[0] - start) / (2 * np.pi)), (shaft_phase[-1] - start) / (2 * np.pi)
            )
            times = np.interp(start + 2 * np.pi * revolutions, shaft_phase, t)
            amps = np.full(times.shape, 6.0 * severity)
        elif label in ("outer_race", "inner_race"):
            geometry = self.geometry
            rate = geometry.bpfo(shaft_hz) if label == "outer_race" else geometry.bpfi(shaft_hz)
            slip = rng.uniform(0.01, 0.02)
            count = int(t[-1] * rate) + 2
            gaps = (1 + slip * rng.standard_normal(count)) / rate
            times = rng.uniform(0, 1 / rate) + np.cumsum(gaps) - gaps[0]
            times = times[times < t[-1]]
            amps = np.full(times.shape, 5.0 * severity)
            if label == "inner_race":
                # The defect passes through the load zone once per shaft revolution.
                phase_at = np.interp(times, t, shaft_phase)
                amps = amps * (0.2 + 0.8 * (0.5 + 0.5 * np.cos(phase_at + rng.uniform(0, 2 * np.pi))))
        else:
            return np.zeros_like(t)
        impulses = np.zeros_like(t)
        np.add.at(impulses, np.clip(np.round(times * fs).astype(int), 0, len(t) - 1), amps)
        return fftconvolve(impulses, self._resonance(cond["resonance_hz"], rng), mode="full")[: len(t)]

    def _resonance(self, f_n: float, rng: np.random.Generator) -> np.ndarray:
        """Impulse response of a lightly damped structural mode (unit peak)."""
        zeta = rng.uniform(0.03, 0.08)
        decay = zeta * 2 * np.pi * f_n
        tt = np.arange(int(np.ceil(8 / decay * self.config.fs))) / self.config.fs
        return np.exp(-decay * tt) * np.sin(2 * np.pi * f_n * np.sqrt(1 - zeta**2) * tt)
