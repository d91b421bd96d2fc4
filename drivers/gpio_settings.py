"""The ``gpio://`` gate URL, parsed and checked: which line plays which role (see
:mod:`drivers.gpio` for every parameter and the choices behind them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

from agent.ports import InputName
from drivers.gpio_lines import (
    BIASES,
    LineSpec,
    check_distinct,
    output_specs,
    parse_chip,
    parse_line_id,
)
from drivers.url_params import UrlParams

INPUTS: tuple[InputName, ...] = get_args(InputName)
DIRECTIONS = ("entry", "exit")


@dataclass(frozen=True, slots=True)
class GpioGateSettings:
    """Everything a ``gpio://`` gate URL says, validated.

    ``outputs`` maps each release output's role to its line: ``relay`` (every direction) or
    ``relay_entry`` and/or ``relay_exit``.
    """

    chip: str
    outputs: Mapping[str, LineSpec]
    inputs: Mapping[InputName, LineSpec] = field(default_factory=dict)
    mode: str = "pulse"
    pulse_ms: int = 500
    hold_max_ms: int = 30_000
    debounce_ms: int = 20
    consumer: str = "gate-agent"

    @classmethod
    def from_url(cls, url: str) -> GpioGateSettings:
        """Parse a ``gpio://`` gate URL; raises DriverError naming the bad parameter."""
        p = UrlParams(url, "gpio")
        chip = parse_chip(p.netloc, p.path, url)
        outputs = _outputs(p)
        default_low = p.choice("input_active", "low", ("low", "high")) == "low"
        default_bias = p.choice("bias", "as_is", BIASES)
        inputs: dict[InputName, LineSpec] = {}
        for name in INPUTS:
            active = p.choice(f"{name}_active", "low" if default_low else "high", ("low", "high"))
            bias = p.choice(f"{name}_bias", default_bias, BIASES)
            line = p.text(name)
            if line is not None:
                inputs[name] = LineSpec(
                    parse_line_id(line, name, url), False, active == "low", bias
                )
        mode = p.choice("mode", "pulse", ("pulse", "hold"))
        settings = cls(
            chip=chip,
            outputs=outputs,
            inputs=inputs,
            mode=mode,
            pulse_ms=p.integer("pulse_ms", 500, 20, 10_000),
            hold_max_ms=p.integer("hold_max_ms", 30_000, 1000, 600_000),
            debounce_ms=p.integer("debounce_ms", 20, 0, 1000),
            consumer=p.text("consumer", "gate-agent") or "gate-agent",
        )
        p.finish()
        _check_outputs(p, outputs)
        if mode == "hold" and not ({"passage_entry", "passage_exit"} & set(inputs)):
            raise p.error(
                "mode=hold needs passage_entry and/or passage_exit to know when to release"
            )
        check_distinct(p, (*outputs.values(), *inputs.values()))
        return settings

    def output(self, direction: str) -> str | None:
        """The role of the output that releases ``direction``; None when it has none."""
        if "relay" in self.outputs:
            return "relay"
        role = f"relay_{direction}"
        return role if role in self.outputs else None

    def specs(self) -> dict[str, LineSpec]:
        specs: dict[str, LineSpec] = dict(self.outputs)
        specs.update(self.inputs.items())
        return specs


_OUTPUTS = ("relay", *(f"relay_{d}" for d in DIRECTIONS))


def _outputs(p: UrlParams) -> dict[str, LineSpec]:
    """The release outputs named in the URL (checked against each other by _check_outputs).

    ``relay_active`` is relay's own polarity and the default of relay_entry's and relay_exit's.
    """
    return output_specs(p, _OUTPUTS, p.choice("relay_active", "high", ("high", "low")))


def _check_outputs(p: UrlParams, outputs: Mapping[str, LineSpec]) -> None:
    per_direction = sorted(set(outputs) - {"relay"})
    if "relay" in outputs and per_direction:
        raise p.error(
            f"relay (one output for every direction) cannot be combined with "
            f"{' and '.join(per_direction)}: give relay alone, or relay_entry and/or relay_exit"
        )
    if not outputs:
        raise p.error(
            "needs a release output: relay=LINE (every direction), "
            "or relay_entry=LINE and/or relay_exit=LINE"
        )
    for role in _OUTPUTS[1:]:
        if p.has(f"{role}_active") and role not in outputs:
            raise p.error(f"{role}_active is given but {role} is not")
