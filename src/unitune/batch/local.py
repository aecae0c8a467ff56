"""The in-process runner: one `Editor` in this process, one task after another (no Ray needed)."""

from __future__ import annotations

from collections import deque

from .tasks import Task, perform


class InProcess:
    """Runs each task when the driver waits for it; one at a time."""

    def __init__(self, editor_options: dict):
        from ..api import Editor
        from ..loading import quiet_libraries

        quiet_libraries()
        self.editor = Editor.load(**editor_options)
        self.queue: deque[Task] = deque()

    @property
    def slots(self) -> int:
        return 1

    def put_image(self, image):
        return image

    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def wait(self) -> list[tuple[Task, object]]:
        """Run the oldest submitted task: [(task, Tuned | EditResult | Failure)]."""
        task = self.queue.popleft()
        return [(task, perform(self.editor, task.image, task.tune, task.prompt, task.edit, task.mask))]

    def close(self) -> None:
        self.queue.clear()
