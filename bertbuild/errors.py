"""The two error families of bertbuild.

`BertbuildError` and its subclasses are user-facing: the CLI prints the message
on one line and exits with `exit_code`, without a traceback. Anything else is a
bug and keeps its traceback.
"""


class BertbuildError(Exception):
    """A problem the user can fix; the message says what and how."""

    exit_code = 1


class UserInputError(BertbuildError):
    """Bad input: a config, a checkpoint, a path, a source string."""

    exit_code = 2


class CheckpointError(UserInputError):
    """A checkpoint directory that does not match the Google BERT TF format."""


class ConfigError(UserInputError):
    """A build config that fails validation."""


class FetchError(BertbuildError):
    """A source the user gave that cannot be fetched, verified or unpacked (exit 2).

    A missing file, an HTTP 404/403, a bad or empty archive, a folder without a checkpoint, a wrong
    sha256 pin: retrying changes nothing, so it is a mistake in what was given, like any `UserInputError`.
    """

    exit_code = 2


class FetchFailed(FetchError):
    """A fetch stopped by something transient that every retry met (connection errors, HTTP 5xx/429,
    a full disk): exit 1, as for a failed build. Running again later may succeed."""

    exit_code = 1


class MissingDependency(BertbuildError):
    """An optional package (TensorFlow, TensorRT, ...) that is not installed."""


class GateFailed(BertbuildError):
    """An accuracy or parity gate failed: nothing may be published.

    `results` is the run's results.json, so a caller can show the table of what failed.
    """

    def __init__(self, message: str, results: str | None = None):
        super().__init__(message)
        self.results = results


class NotTensorRTReady(BertbuildError):
    """An ONNX file that TensorRT's ONNX parser would reject (`bertbuild trt-check` names each node)."""


class ValidationError(BertbuildError):
    """An engine's outputs disagree with the reference beyond tolerance."""


class IntegrityError(BertbuildError):
    """A stored or downloaded file whose sha256 or size differs from its manifest (exit 1)."""


class OutOfSpace(BertbuildError):
    """A disk (or quota) filled up while writing: the message names the path and the space left (exit 1)."""


class RunConflict(BertbuildError):
    """The run id is already published with different contents (bundles are immutable)."""


class StepFailed(BertbuildError):
    """A step run in a child process died or failed there (killed by the OS, or a crash)."""


class NotEnoughMemory(UserInputError):
    """The host has clearly less memory available than the build is estimated to need."""


class StoreUnavailable(UserInputError):
    """An artifact store that cannot be used: its endpoint does not answer, its bucket is missing, access is denied."""


class FleetFailed(BertbuildError):
    """A fleet member did not complete with a released bundle: the fleet run fails, naming each such member."""
