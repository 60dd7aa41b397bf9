"""Latency-driven slimming (EfficientFormer paper §4.2, generalised to any family's space).

State: a ``Choice`` (width and kind per slot), starting from ``Supernet.initial_choice()``.
Each step proposes the paper's three actions:

1. ``slot->identity``  – the least important kept slot (importance from α, paper §4.2) becomes I;
2. ``3d->4d``          – the first token block (MB3D) leaves the 3D partition (becomes MB4D);
3. ``width-16``        – the least important stage narrows to its next width option (one width
                         step on a grid). With width α (a supernet trained with
                         ``--train-widths``, the default) a stage's importance at width w is
                         P(width >= w) / P(width < w) under its α: the paper's keep/identity
                         ratio of a slot, read as "keep these channels" against "drop them".
                         Without width α it is the sum of the stage's kept slots' importance.
4. ``<knob>-down|up`` – family actions: every elastic stage knob of the space (MobileViT's
                         transformer width ``dim``, iFormer's q/k reduction ``r``, FMViT's
                         high-frequency branches and FM width) steps to its next cheaper value,
                         one action per stage and knob.

For each action Δms comes from the latency table and Δaccuracy from the supernet's sub-network
with inherited weights after BN recalibration. The action with the smallest accuracy drop per ms
saved is taken; repeat until the predicted latency meets the target.

Choices the paper leaves open (defaults; flags of ``nas slim``):
* evaluation: ``--calib-images`` training images (2,048) recalibrate BN, a fixed ``--val-images``
  subset (10,000; fewer where they would not fit 2 GiB, ``nas.evaluate.default_subsets``) scores;
  both drawn once from ``--seed``. With 256 / 1,000 (the defaults before) the supernet's ranking
  of 17 trained networks fell from Kendall τ 0.75 to 0.45 (experiments/search_quality/rerank).
* channel order: ``--channel-order importance`` permutes residual channels by L1 importance
  before slimming so a narrower stage keeps its most important channels; ``natural`` keeps the
  trained order; ``auto`` (default) keeps it for a supernet with width α, whose prefixes are
  what it trained (reordering them cost 20.6 points of inherited top-1 at min width,
  experiments/width_training), and reorders a supernet trained at full width.
* ties: equal accuracy drop per ms -> smaller loss increase per ms -> larger saving -> action order.
* proposals (``--proposals``): ``paper`` (default) proposes the network's least important slot
  and stage (by α) and its first MB3D; ``per-stage`` proposes each action in every stage and lets
  the measured accuracy drop per ms choose among stages, for ~4× the evaluations. After a short
  supernet training α is near its start (experiments/search_quality: slot importances 0.6–1.9
  after one Fashion-MNIST epoch), which is why per-stage was tried; it gave no better trained
  network there (experiments/search_quality/result.md), so the cheaper paper rule stays.
* the step that meets a target (``--last-step``): when the drop-per-ms pick meets the next
  target, ``least-drop`` (default) takes instead, of the actions that meet it, the one with the
  smallest accuracy drop, and of equals the one that keeps most latency: never a larger drop than
  the ratio's pick, never more steps. ``ratio`` keeps the drop-per-ms rule, which favours the
  largest saving and so overshoots (1.331 ms emitted for a 1.4235 ms target in
  experiments/search_quality).
* an action that saves no latency is never taken; a stage keeps at least ``min_blocks`` blocks
  and ``min_width`` channels (search space).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from nas.errors import UserError
from nas.evaluate import Evaluator, Score
from nas.core import io
from supernets.config import IDENTITY, ArchConfig, Choice
from supernets.supernet import Supernet

ACTIONS = ("slot->identity", "3d->4d", "width-16", "<knob>-down|up")
PROPOSALS = ("paper", "per-stage")   # which slots and stages an action is proposed for
LAST_STEPS = ("least-drop", "ratio")    # how the step that meets a target is chosen


class UnreachableTarget(UserError):
    """The target is below the fastest config the slimming actions can reach on the table."""

    def __init__(self, target_ms: float, floor_ms: float, message: str | None = None):
        super().__init__(message or f"--target-ms {target_ms:g} is below the smallest reachable latency "
                                    f"{floor_ms:.3f} ms on this table; choose a target >= {floor_ms:.3f}")
        self.target_ms, self.floor_ms = target_ms, floor_ms


@dataclass(frozen=True)
class Action:
    name: str
    detail: str
    choice: Choice


@dataclass(frozen=True)
class Candidate:
    """A proposed action with what the step measured of it: the latency the table predicts after
    it, and the sub-network's inherited accuracy and loss (a `Score`), relative to the current
    network's."""
    action: Action
    latency_ms: float
    score: Score
    saved_ms: float      # current latency - latency_ms (> 0: only cheaper actions are candidates)
    drop: float          # current top-1 - the candidate's (points; negative: it gained)
    loss_rise: float     # the candidate's loss - the current loss
    order: int           # its place among the step's proposals: the last tie-break

    @classmethod
    def measured(cls, action: Action, latency_ms: float, score: Score, current_ms: float, current: Score,
                 order: int) -> "Candidate":
        return cls(action, latency_ms, score, current_ms - latency_ms, current.accuracy - score.accuracy,
                   score.loss - current.loss, order)

    @property
    def drop_per_ms(self) -> float:
        return self.drop / self.saved_ms


def choose(candidates: Sequence[Candidate], rung: float, last_step: str = "least-drop") -> Candidate:
    """The step's pick (EfficientFormer §4.2): the smallest accuracy drop per ms saved; ties go to
    the smaller loss rise per ms, then the larger saving, then the proposal order.

    ``last_step="least-drop"``: when that pick brings the latency to `rung` (the next target) or
    below, latency saved beyond it buys nothing, so of the candidates that also reach it the one
    with the least drop is taken (then the least loss rise, then the smaller saving, then order):
    one big drop that meets the target must not beat two cheap steps. ``"ratio"``: the paper's
    rule throughout."""
    best = min(candidates, key=lambda c: (c.drop_per_ms, c.loss_rise / c.saved_ms, -c.saved_ms, c.order))
    if last_step == "least-drop" and best.latency_ms <= rung:
        meeting = [c for c in candidates if c.latency_ms <= rung]
        best = min(meeting, key=lambda c: (c.drop, c.loss_rise, c.saved_ms, c.order))
    return best


@dataclass
class Step:
    step: int
    action: str
    detail: str
    latency_ms: float
    accuracy: float
    loss: float
    delta_accuracy: float = 0.0
    saved_ms: float = 0.0
    drop_per_ms: float = 0.0
    candidates: int = 0
    config: str = ""


@dataclass
class SlimResult:
    choice: Choice
    config: ArchConfig
    steps: list[Step] = field(default_factory=list)
    # target ms -> index into `steps` of the first step at or under it (a latency ladder: one
    # trajectory, one emitted config per target it crosses; 0 when the start already meets it)
    emitted: dict[float, int] = field(default_factory=dict)
    choices: list[Choice] = field(default_factory=list)   # the choice after each step

    @property
    def latency_ms(self) -> float:
        return self.steps[-1].latency_ms

    @property
    def accuracy(self) -> float:
        return self.steps[-1].accuracy

    def at(self, target_ms: float) -> tuple[Choice, Step]:
        """The choice emitted for `target_ms` and the step it was reached at."""
        i = self.emitted[target_ms]
        return self.choices[i], self.steps[i]


def propose(net: Supernet, choice: Choice, proposals: str = "paper") -> list[Action]:
    """The actions of one step from `choice`. ``paper``: the least important slot and the least
    important stage's width over the whole network (§4.2), the first MB3D. ``per-stage``: the same
    three actions in every stage, so that the measured accuracy drop per ms, not α compared across
    stages, decides which stage gives way."""
    if proposals not in PROPOSALS:
        raise UserError(f"--proposals {proposals!r}: choose one of {', '.join(PROPOSALS)}")
    space, token_kinds = net.space, set(net.family.token_kinds)
    importance = net.slot_importance()
    per_stage = proposals == "per-stage"
    out: list[Action] = []

    removable = []
    for j, kinds in enumerate(choice.kinds):
        kept = [s for s, k in enumerate(kinds) if k != IDENTITY]
        if IDENTITY in space.stages[j].choices and len(kept) > space.stages[j].min_blocks:
            removable.append([(importance[j][s], j, s) for s in kept])
    for _, j, s in _least(removable, per_stage):
        out.append(Action("slot->identity", f"stage {j + 1} slot {s + 1} ({choice.kinds[j][s]}) -> identity",
                          choice.replace_kind(j, s, IDENTITY)))

    for j, kinds in enumerate(choice.kinds):
        first = next((s for s, k in enumerate(kinds) if k in token_kinds), None)
        map_kinds = [k for k in space.stages[j].choices if k != IDENTITY and k not in token_kinds]
        if first is not None and map_kinds:
            out.append(Action("3d->4d", f"stage {j + 1} slot {first + 1} {kinds[first]} -> {map_kinds[0]}",
                              choice.replace_kind(j, first, map_kinds[0])))
            if not per_stage:
                break

    narrowable = []
    for j, (w, kinds) in enumerate(zip(choice.widths, choice.kinds)):
        if space.narrower(j, w) is not None:
            by_alpha = net.width_importance(j, w)
            narrowable.append([(by_alpha if by_alpha is not None else
                                sum(importance[j][s] for s, k in enumerate(kinds) if k != IDENTITY), j)])
    for _, j in _least(narrowable, per_stage):
        w = choice.widths[j]
        narrower = space.narrower(j, w)
        out.append(Action(f"width-{w - narrower}", f"stage {j + 1} width {w} -> {narrower}",
                          choice.replace_width(j, narrower)))

    # No α ranks knob values, so every knob step is proposed and the accuracy drop per ms decides.
    for j, stage in enumerate(space.stages):
        current = choice.stage_knobs(space, j)
        for name, values in stage.knobs.items():   # cheapest first
            i = values.index(current[name])
            if i > 0:
                way = "down" if net.family.stage_knobs[name] > 0 else "up"
                out.append(Action(f"{name}-{way}", f"stage {j + 1} {name} {current[name]} -> {values[i - 1]}",
                                  choice.replace_knob(space, j, name, values[i - 1])))
    return out


def _least(options_per_stage: list[list[tuple]], per_stage: bool) -> list[tuple]:
    """The least important option of each stage, or only the least of all of them."""
    least = [min(options) for options in options_per_stage]
    return least if per_stage else [min(least)] if least else []


def smallest_choices(net: Supernet, start: Choice) -> list[Choice]:
    """Every choice at the floor of the actions' reach: min widths and knob values, min blocks per
    stage, each kept token block either kept or turned into the map kind. The cheapest of them bounds the
    smallest latency slimming can reach."""
    space, token_kinds = net.space, set(net.family.token_kinds)
    per_stage = []
    for j, kinds in enumerate(start.kinds):
        sp = space.stages[j]
        kept = [k for k in kinds if k != IDENTITY]
        n = sp.min_blocks if IDENTITY in sp.choices else len(kept)
        map_kinds = [k for k in sp.choices if k != IDENTITY and k not in token_kinds]
        options = {tuple(kept[:n])}
        if map_kinds:
            options.add(tuple(map_kinds[0] for _ in kept[:n]))
        per_stage.append([opt + (IDENTITY,) * (sp.slots - len(opt)) for opt in options])
    widths = tuple(s.min_width for s in space.stages)
    knobs = tuple(tuple(sorted(space.cheapest_knobs(j).items())) for j in range(len(space.stages)))
    return [Choice(widths, tuple(combo), knobs) for combo in itertools.product(*per_stage)]


def channel_order(order: str, net: Supernet) -> str:
    """``--channel-order`` resolved for `net` (``auto``: see the module docstring)."""
    if order == "auto":
        return "natural" if len(net.width_choices) else "importance"
    return order


def checked_targets(targets: Iterable[float]) -> list[float]:
    """The distinct targets, largest first; each must be a finite number of ms > 0."""
    out = sorted({float(t) for t in targets}, reverse=True)
    for t in out:
        if not math.isfinite(t) or t <= 0:
            raise UserError(f"--target-ms {t:g} must be a finite number > 0")
    return out


def reachable_floor(net: Supernet, latency: Callable[[ArchConfig], float], start: Choice,
                    num_classes: int | None = None) -> float:
    """The smallest latency the slimming actions can reach from `start`."""
    return min(latency(c.to_config(net.space, num_classes=num_classes or net.num_classes))
               for c in smallest_choices(net, start))


def slim(net: Supernet, latency: Callable[[ArchConfig], float], evaluator: Evaluator,
         target_ms: float | Sequence[float], *, start: Choice | None = None,
         evaluate_map: Callable[[Callable, Iterable], Iterable] = map, log: Callable[[str], None] = print,
         num_classes: int | None = None, max_steps: int = 10_000, proposals: str = "paper",
         last_step: str = "least-drop") -> SlimResult:
    """Slim until the predicted latency meets the smallest target; with several targets (a
    ladder) the first step at or under each one is emitted for it."""
    targets = checked_targets([target_ms] if isinstance(target_ms, (int, float)) else target_ms)
    if last_step not in LAST_STEPS:
        raise UserError(f"--last-step {last_step!r}: choose one of {', '.join(LAST_STEPS)}")
    space = net.space
    to_config = lambda c: c.to_config(space, num_classes=num_classes or net.num_classes)  # noqa: E731
    choice = start or net.initial_choice()
    floor = reachable_floor(net, latency, choice, num_classes)
    if targets[-1] < floor:
        raise UnreachableTarget(targets[-1], floor)

    def evaluate(c: Choice) -> Score:
        return evaluator(net.subnet(c))

    def cheaper(actions: list[Action], than_ms: float) -> list[tuple[Action, float]]:
        # each action with its predicted latency, if that is below `than_ms`
        lat = [latency(to_config(a.choice)) for a in actions]
        return [(a, ms) for a, ms in zip(actions, lat) if ms < than_ms]

    current_ms = latency(to_config(choice))
    current = evaluate(choice)
    steps = [Step(0, "start", "initial choice", current_ms, current.accuracy, current.loss,
                  config=to_config(choice).summary())]
    result = SlimResult(choice, to_config(choice), steps, {}, [choice])
    log(f"step 0  start  {current_ms:8.3f} ms  acc {current.accuracy:6.2f}%  {steps[0].config}")

    def reached() -> None:
        for t in targets:
            if t not in result.emitted and current_ms <= t:
                result.emitted[t] = len(steps) - 1
                if len(targets) > 1:
                    log(f"  target {t:g} ms reached at step {len(steps) - 1} ({current_ms:.3f} ms)")

    reached()
    while current_ms > targets[-1]:
        if len(steps) > max_steps:
            raise UserError(f"slimming did not reach {targets[-1]:g} ms in {max_steps} steps")
        viable = cheaper(propose(net, choice, proposals), current_ms)
        if not viable and proposals == "paper":
            # A measured table can price the paper's one width step no cheaper than the current
            # network (timing noise on a small op) while other stages still have steps that save
            # latency: rather than stop short of a reachable target, take every stage's proposals.
            viable = cheaper(propose(net, choice, "per-stage"), current_ms)
            if viable:
                log(f"  note: no least-important action saves latency at {current_ms:.3f} ms; "
                    "this step weighs every stage's least important action")
        if not viable:
            raise UserError(f"no action reduces latency below {current_ms:.3f} ms; the target {targets[-1]:g} ms "
                            "is not reachable from this supernet")
        scores = evaluate_map(evaluate, [a.choice for a, _ in viable])
        candidates = [Candidate.measured(a, ms, sc, current_ms, current, order)
                      for order, ((a, ms), sc) in enumerate(zip(viable, scores))]
        rung = max(t for t in targets if t not in result.emitted)   # the next target to meet
        best = choose(candidates, rung, last_step)
        choice, current, current_ms = best.action.choice, best.score, best.latency_ms
        step = Step(len(steps), best.action.name, best.action.detail, best.latency_ms, best.score.accuracy,
                    best.score.loss, -best.drop, best.saved_ms, best.drop_per_ms, len(viable),
                    to_config(choice).summary())
        steps.append(step)
        result.choices.append(choice)
        log(f"step {step.step:<3d} {best.action.name:<15s} {best.latency_ms:8.3f} ms (-{best.saved_ms:.3f})  "
            f"acc {best.score.accuracy:6.2f}% ({-best.drop:+.2f})  {best.action.detail}")
        reached()
    result.choice, result.config = choice, to_config(choice)
    return result


def write_trajectory(result: SlimResult, stem: Path, target_ms: float | Sequence[float], title: str) -> list[Path]:
    """``<stem>.trajectory.csv`` and ``<stem>.trajectory.png`` (latency vs accuracy per step,
    every target marked, the config emitted for each starred)."""
    targets = [target_ms] if isinstance(target_ms, (int, float)) else list(target_ms)
    rows = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(s).items()} for s in result.steps]
    for row in rows:
        row["emitted_for"] = " ".join(f"{t:g}" for t, i in sorted(result.emitted.items()) if i == row["step"])
    csv_path = io.write_csv(stem.with_name(stem.name + ".trajectory.csv"), rows)
    png_path = stem.with_name(stem.name + ".trajectory.png")
    with io.png_figure(png_path, figsize=(6.4, 4.2)) as (fig, ax):
        xs = [s.latency_ms for s in result.steps]
        ys = [s.accuracy for s in result.steps]
        ax.plot(xs, ys, "-o", ms=3, lw=1.2, color="tab:blue", label="slimming step")
        ax.plot(xs[:1], ys[:1], "s", color="tab:green", label="start")
        for n, t in enumerate(sorted(targets, reverse=True)):
            ax.axvline(t, ls="--", color="gray", lw=1, label="targets" if n == 0 else None)
            ax.annotate(f"{t:g} ms", (t, 1.0), xycoords=("data", "axes fraction"), fontsize=7, ha="right", va="top",
                        rotation=90, color="gray")
        emitted = sorted(set(result.emitted.values()))
        ax.plot([xs[i] for i in emitted], [ys[i] for i in emitted], "*", ms=12, color="tab:red", label="emitted")
        ax.invert_xaxis()
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("top-1 with inherited weights (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return [csv_path, png_path]
