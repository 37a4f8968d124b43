"""What a run tells its user about the rows it did not finish, and what to run next.

Each text is written here once. The manifest line of an ``outcome_unknown`` row, the error a
refused resubmission raises, the flow run's state message, the run's rows table, the contact
sheet and the command line all take it from here (the command line with the exact command
instead of the flag).

Examples:
    >>> print(next_steps(outcome_unknown=1, in_flight=2)[1])
    2 in flight: collect them with `prefect-seedream recover OUTPUT` (flow seedream-recover-dataset): nothing is paid again
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

COMMAND = "prefect-seedream"
RESUBMIT_UNKNOWN_FLAG = "--resubmit-unknown"
RECOVER_FLOW = "seedream-recover-dataset"

#: Why a row's outcome is unknown, and that it was not sent again.
OUTCOME_UNKNOWN = (
    "the submission may have created (and billed) a task but no answer came back, and the "
    "API's task list did not show it; it was not resubmitted"
)
#: How ``--resubmit-unknown`` finishes such a row without paying twice.
RESUBMIT_UNKNOWN_EFFECT = (
    "the same Idempotency-Key is sent again, so a task the lost submission created is "
    "returned instead of paid twice"
)


def resubmit_unknown_hint(how: str = f"{RESUBMIT_UNKNOWN_FLAG} (resubmit_unknown=True)") -> str:
    """What to run about rows whose outcome is unknown (``how``: the flag, or a command).

    Examples:
        >>> resubmit_unknown_hint()
        're-run with --resubmit-unknown (resubmit_unknown=True): the same Idempotency-Key is sent again, so a task the lost submission created is returned instead of paid twice'
    """
    return f"re-run with {how}: {RESUBMIT_UNKNOWN_EFFECT}"


def outcome_unknown_guidance(how: str = f"{RESUBMIT_UNKNOWN_FLAG} (resubmit_unknown=True)") -> str:
    """Why a row's outcome is unknown and what to run about it (the manifest's message).

    Examples:
        >>> outcome_unknown_guidance("the command below").split(". ")[1][:34]
        'Re-run with the command below: the'
    """
    hint = resubmit_unknown_hint(how)
    return f"{OUTCOME_UNKNOWN}. {hint[0].upper()}{hint[1:]}"


#: The message of an ``outcome_unknown`` row (the manifest, the error of its refused resubmission).
OUTCOME_UNKNOWN_GUIDANCE = outcome_unknown_guidance()


def recover_hint(
    how: str = f"`{COMMAND} recover OUTPUT` (flow {RECOVER_FLOW})", what: str = "them"
) -> str:
    """What to run about tasks a run left in flight (``how``: the command, or words for it).

    Examples:
        >>> recover_hint("the command below")
        'collect them with the command below: nothing is paid again'
    """
    return f"collect {what} with {how}: nothing is paid again"


def recover_command(output: str) -> str:
    """The command that collects the tasks a run on ``output`` left in flight.

    Examples:
        >>> recover_command("my output")
        "prefect-seedream recover 'my output'"
    """
    return shlex.join([COMMAND, "recover", output])


def resubmit_command(arguments: Sequence[str]) -> str:
    """The same command line (``arguments``: without the program), with ``--resubmit-unknown``.

    Examples:
        >>> resubmit_command(["run", "prompts.csv", "--resubmit-unknown", "--output", "out"])
        'prefect-seedream run prompts.csv --output out --resubmit-unknown'
    """
    kept = [argument for argument in arguments if argument != RESUBMIT_UNKNOWN_FLAG]
    return shlex.join([COMMAND, *kept, RESUBMIT_UNKNOWN_FLAG])


def next_steps(outcome_unknown: int, in_flight: int) -> list[str]:
    """One hint per kind of unfinished row, with their counts (what a run's message ends with).

    Examples:
        >>> next_steps(outcome_unknown=0, in_flight=0)
        []
        >>> next_steps(outcome_unknown=3, in_flight=0)[0][:50]
        '3 outcome unknown: re-run with --resubmit-unknown '
    """
    hints = []
    if outcome_unknown:
        hints.append(f"{outcome_unknown} outcome unknown: {resubmit_unknown_hint()}")
    if in_flight:
        hints.append(f"{in_flight} in flight: {recover_hint()}")
    return hints
