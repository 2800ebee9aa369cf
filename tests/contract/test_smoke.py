from asynctaskmanager import ExecutorType, Storage, TaskConfig, TaskRequest, Worker


def test_enqueue_claim_complete(storage: Storage) -> None:
    storage.task_configs.create(TaskConfig("email", "Send email", ExecutorType.FUNCTION))
    storage.queue.register_worker(Worker("w1", "worker one", "10.0.0.1:9000"))
    [task] = storage.queue.enqueue_many([TaskRequest("email", {"to": "a@example.com"})])
    [claimed] = storage.queue.claim("w1")
    assert claimed.task_id == task.task_id
    assert storage.queue.complete(claimed, {"sent": True})
    assert storage.tasks.get(task.task_id).result == {"sent": True}
    assert storage.workers.get("w1").current_load == 0
