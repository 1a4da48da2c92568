"""Task kinds: what differs between downstream tasks, from the card to the report (docs/architecture.md
"Adding a task kind"). `task_for_card(card)` is the task a data set's card chooses; `task_of_run(folder, record)`
the task of a finished run; `Task` (pipeline/tasks/base.py) is the contract; pipeline/tasks/registry.py lists the
kinds (torch-free; each kind's module loads on first use)."""

from pipeline.tasks.registry import (
    TaskEntry,
    card_kinds,
    register_task,
    task_for_card,
    task_for_kinds,
    task_named,
    task_names,
    unregister_task,
)
from pipeline.tasks.run import task_of_run

__all__ = [
    "TaskEntry",
    "card_kinds",
    "register_task",
    "task_for_card",
    "task_for_kinds",
    "task_named",
    "task_names",
    "task_of_run",
    "unregister_task",
]
