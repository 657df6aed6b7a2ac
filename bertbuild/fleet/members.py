"""The builds of a fleet: a config file, its overrides and a label each, all checked before anything starts.

A members file (YAML)::

    members:
      - config: configs/nightly.yaml        # a build config, as `bertbuild run --config` takes it
        label: minilm                       # optional; default: the config's model name
        overrides: ["eval.limit=500"]       # optional; `bertbuild run --set` strings

Config paths are passed on as written: each member's run reads its config on
the host whose worker runs it, from the project directory, so a relative path
names the same file on every host. They are read here too, with their
overrides, so that a bad entry stops the fleet before any run starts, and so
the fleet knows which model each member builds and which store it publishes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bertbuild.artifacts.store import check_segment, default_store
from bertbuild.config import BuildConfig, build_section, load_config, read_yaml_file
from bertbuild.errors import ConfigError, UserInputError


class FleetMember(BaseModel):
    """One build of a fleet (the type of the `build-fleet` flow's `members` list items)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str = Field(min_length=1)  # path of a build config YAML file
    overrides: list[str] = []  # KEY=VALUE, applied to that config
    label: str | None = None  # names the member in the report; default: the config's model name


class _MembersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: list[FleetMember] = Field(min_length=1)


@dataclass(frozen=True)
class ResolvedMember:
    """A member with its config read and checked: what the fleet starts and what it reads back."""

    label: str
    member: FleetMember
    config: BuildConfig

    @property
    def model(self) -> str:
        return self.config.model_name

    @property
    def store(self) -> str:
        """Where the member's run publishes (`publish.store`, else `$BERTBUILD_STORE`, else `runs/store`)."""
        return self.config.publish.store or default_store()

    @property
    def storage_options(self) -> dict:
        """fsspec's options for that store (`publish.storage_options`; {} for the AWS variables or a directory)."""
        return dict(self.config.publish.storage_options or {})

    def parameters(self, require_commit: str | None = None) -> dict:
        """The `build-bert` flow's parameters for this member's run."""
        params: dict = {"config": self.member.config, "overrides": list(self.member.overrides)}
        if require_commit:
            params["require_commit"] = require_commit
        return params


def load_members(members: list[FleetMember | dict] | str) -> list[ResolvedMember]:
    """Every member, checked: a members file's path, or the list itself. One-line `ConfigError` on a bad entry."""
    if isinstance(members, (str, Path)):
        origin, raw = str(members), read_yaml_file(Path(members), "members file")
        if not isinstance(raw, dict):
            raise ConfigError(f"{Path(members)}: expected a mapping with a 'members' list, got {type(raw).__name__}")
    else:
        origin, raw = "members", {"members": members}
    parsed = build_section(_MembersFile, origin, **raw)
    resolved: list[ResolvedMember] = []
    for index, member in enumerate(parsed.members):
        where = f"{origin}: members[{index}]"
        try:
            config = load_config(member.config, member.overrides)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not config.publish.enabled:
            raise ConfigError(f"{where}: {member.config} has publish.enabled false, but a fleet reads each "
                              f"member's results from the store it publishes to")
        label = member.label or config.model_name
        try:
            check_segment(label, "label")
        except UserInputError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        clash = next((i for i, other in enumerate(resolved) if other.label == label), None)
        if clash is not None:
            raise ConfigError(f"{where}: label {label!r} is also members[{clash}]'s; give each member its own label")
        resolved.append(ResolvedMember(label, member, config))
    return resolved
