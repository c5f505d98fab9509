"""The dispatch objective: :class:`Policy` holds every weight of the LP (see dispatch.md,
"Objective"), with the two named policies ``re100`` and ``cost``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megastation.dispatch.problem import GridState, ProblemError

# re100: grid energy into the battery costs 2 % of a tier-2 kWh more than grid energy
# straight into a car (200 points = 2,000 KRW of tier 3 per kWh), so the battery is not
# filled from the cheap night grid to save money (dispatch.md, "Grid into the battery").
RE100_GRID_TO_BATTERY_PREMIUM = 0.02
# re100 counts on this share of the expected energy of cars still to come (cost on all
# of it): measured on seeds 1-3 in dispatch.md, "Cars still to come (expected sessions)".
RE100_EXPECTED_SHARE = 0.7


@dataclass(frozen=True)
class Policy:
    """Objective weights, in points per unit. Tiers are far apart (see dispatch.md)."""

    unmet_weight_per_kwh: float = 1e6  # tier 1: energy a car asked for and did not get
    grid_to_ev_weight_per_kwh: float = 1e4  # tier 2: grid (and grey battery) energy into cars
    cost_weight_per_krw: float = 1e-1  # tier 3: money (energy by time of use, demand charge)
    early_weight_per_kwh: float = 1e-2  # tier 4: later in a car's stay costs more
    chatter_weight_per_kw: float = 1e-4  # tier 5: step-to-step change of power (see below)
    # Site load not served (only when the grid limit cannot carry it): this many times
    # the unmet-energy weight per kWh.
    shed_unmet_factor: float = 10.0
    # Curtailed PV costs this share of the chatter weight per kWh: export rather than curtail.
    curtail_chatter_frac: float = 0.1
    # Early charging: a car's kWh in step t costs early_weight x (early_base + progress
    # through its stay at the step's midpoint, 0..1).
    early_base: float = 0.5
    # Chatter of each car at every step (one more column and row per car-step, solve
    # several times slower); False: each car's change from its current power in the
    # first step, and step-to-step changes of total car power and battery power.
    chatter_per_session: bool = False
    battery_wear_krw_per_kwh: float = 0.0  # throughput cost (AC kWh discharged)
    # PV kWh left in the battery at the horizon end, as a share of an avoided grid kWh.
    # 0 by default: stored energy already has its KRW terminal value, and a green label
    # worth something after the horizon makes re-solves disagree on labels (dispatch.md).
    green_terminal_frac: float = 0.0
    beyond_horizon_frac: float = 0.5  # energy that could still come after the horizon is
    # worth this share of a grid kWh (tier 2 + mean price): PV now yes, grid now waits
    # Grid energy into the battery costs this share of a tier-2 kWh more than grid
    # energy straight into a car (dispatch.md, "Grid into the battery under re100").
    grid_to_battery_premium: float = 0.0
    # Share of the expected energy of cars still to come that the plan counts on
    # (megastation.control.needs.expected_sessions): below 1 hedges against cars that do not come.
    expected_share: float = 1.0
    # A kWh below the problem's reserve (Problem.soc_floor_kwh, the largest shortfall)
    # costs this much. The control loop sets it to the demand charge a stored kWh saves
    # in an evening burst (megastation.control.reserve.reserve_weight_per_kwh); this
    # default, for other callers, is twice a re100 grid kWh into a car: the reserve then
    # gives way to cars' energy only.
    reserve_short_weight_per_kwh: float = 2e4
    name: str = "custom"

    @classmethod
    def re100(cls) -> Policy:
        return cls(
            grid_to_battery_premium=RE100_GRID_TO_BATTERY_PREMIUM,
            expected_share=RE100_EXPECTED_SHARE,
            name="re100",
        )

    @classmethod
    def cost(cls) -> Policy:
        return cls(grid_to_ev_weight_per_kwh=1e-1, cost_weight_per_krw=1.0, name="cost")

    @classmethod
    def of(cls, policy: str | Policy) -> Policy:
        if isinstance(policy, Policy):
            return policy
        if policy == "re100":
            return cls.re100()
        if policy == "cost":
            return cls.cost()
        raise ProblemError(f"policy: must be 're100', 'cost' or a Policy, got {policy!r}")


def battery_may_export(policy: Policy, grid_state: GridState) -> bool:
    """Stored energy may go to the grid only when export pays and the policy puts money
    first (``cost``): a zero or negative export price makes it a gift, and under ``re100``
    stored energy is for cars (#11: the battery was seen emptied into the grid at night)."""
    price = np.asarray(grid_state.export_price_krw_per_kwh, dtype=float)
    return bool(np.all(price > 0)) and (
        policy.cost_weight_per_krw >= policy.grid_to_ev_weight_per_kwh
    )
