"""The one recipe for a cached step: a Prefect task, measured, keyed on what it declares, and a verified hit.

    @cached_step("fuse", task_name="fuse-onnx", code=("bertbuild.fuse", "bertbuild.onnx_files"),
                 libraries=("onnx", "onnx-graphsurgeon"))
    def fuse(exported: dict, model: ModelInfo, run: RunContext) -> Work:
        return Work(files=[exported["path"]], fields={"layers": model.num_layers},
                    produce=lambda out: fusion.fuse_onnx(...))

The body says only what the step reads (input files, config fields) and how
to produce its files; the decorator does the rest, the same way for every
step:
- the Prefect task (`task_name`, no Prefect caching: the step cache knows
  whether the files behind a result are still there and unchanged),
- its wall time and peak memory in the run's journal (`resources.metered`),
- its key (`step_cache.step_key`) from the files, the fields, the code of the
  modules it declares (with all they import) plus the body's own module file,
  the versions of the libraries it names, and the host kind where its output
  belongs to the machine (`host=True`: engines, timings),
- the lookup: a hit is an entry whose files are all there with the bytes they
  had (`step_cache.StepCache`), else `produce` runs into a fresh entry.

Its `run` parameter, by name, is the `RunContext` whose cache and journal the
step uses. A step's name is its cache folder and what `--refresh` names
(`kinds.STEPS`): one name, one kind of work.

`CachedStep` alone (no Prefect) is the same key-and-lookup for work done
inside one task, such as the tune split's reference logits, agreement and
timing (`tasks.precision.tune_try`).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from bertbuild.kinds import STEPS
from bertbuild.resources import current_meter, measured


@dataclass(frozen=True)
class Work:
    """What one call of a step reads and how it writes: the body of a `cached_step` returns it.

    `finish`: what the task returns, made from the step's (cached or fresh) result;
    `reuse`: for a timing step, whether an earlier timing may be reused (`benchmark.reuse`);
    otherwise it is measured afresh and replaces the entry.
    """

    produce: Callable[[Path], dict]
    files: Sequence[str | Path] = ()
    fields: Any = None
    finish: Callable[[dict], Any] | None = None
    reuse: bool = True


@dataclass(frozen=True)
class CachedStep:
    """One kind of cached work: its name, the code and libraries its output depends on, whether the host does."""

    name: str
    code: tuple[str, ...]  # modules (dotted names) whose import closure the key covers
    libraries: tuple[str, ...] = ()  # keys of `bertbuild.host.PACKAGES`
    host: bool = False
    wiring: tuple[str, ...] = field(default=())  # modules counted by their own file only (the task's)

    def __post_init__(self):
        if self.name not in STEPS:
            raise ValueError(f"step {self.name!r} is not in kinds.STEPS")

    def key(self, work: Work) -> str:
        from bertbuild.step_cache import step_key

        return step_key(self.name, files=work.files, fields=work.fields, modules=self.code, wiring=self.wiring,
                        libraries=self.libraries, host=self.host)

    def run(self, run, work: Work) -> dict:
        """The step's result from `run`'s cache, produced into a new entry on a miss."""
        cache = run.cache if work.reuse else replace(run.cache, refresh=run.cache.refresh | {self.name})
        result = cache.run(self.name, self.key(work), work.produce)
        if (meter := current_meter()) is not None:
            meter.cached = result["cached"]
        return result


def cached_step(name: str, *, task_name: str, code: Sequence[str], libraries: Sequence[str] = (),
                host: bool = False, **task_options):
    """Make a body returning `Work` into a measured, cached Prefect task (see the module docstring)."""
    def decorate(body: Callable[..., Work]):
        signature = inspect.signature(body)
        if "run" not in signature.parameters:
            raise TypeError(f"{body.__qualname__}: a cached step takes the run as a parameter named `run`")
        step = CachedStep(name, tuple(code), tuple(libraries), host, wiring=(body.__module__,))

        @functools.wraps(body)
        def run_step(*args, **kwargs):
            run = signature.bind(*args, **kwargs).arguments["run"]
            work = body(*args, **kwargs)
            result = step.run(run, work)
            return work.finish(result) if work.finish is not None else result

        from prefect import task
        from prefect.cache_policies import NO_CACHE

        made = task(name=task_name, cache_policy=NO_CACHE, **task_options)(measured(task_name)(run_step))
        made.step = step  # the step behind the task: its name, code and libraries (tests, closures)
        return made
    return decorate
