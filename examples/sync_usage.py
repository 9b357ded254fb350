"""The blocking client, for scripts and notebooks: no ``async``, no ``await``.

``SyncOomolConnectClient`` takes the same arguments and has the same methods
as ``OomolConnectClient``; its event loop runs in a background thread. Calls
may come from several threads at once. Ctrl-C during a call cancels it and
stops its remote task before ``KeyboardInterrupt`` reaches you.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from _connect import POLLING, sync_server_url

from oomol_connect_anyio import CreateTaskRequest, SyncOomolConnectClient, TaskFailedError


def main() -> None:
    # backend="trio" runs the same calls on a trio loop.
    with sync_server_url() as url, SyncOomolConnectClient(base_url=url) as client:
        blocks = client.blocks.list()["blocks"]
        print(f"{len(blocks)} blocks, e.g. {blocks[0]['blockId']}")

        run = client.tasks.run(
            {"manifest": "demo::upper", "inputValues": {"text": "sync"}}, POLLING
        )
        print("run:", run["result"])

        task = client.tasks.create({"manifest": "demo::echo", "inputValues": {"n": 42}})
        done = client.tasks.wait_for_completion(task["id"], POLLING)
        print(f"create + wait_for_completion: task {done['id']} {done['status']}")

        # Errors keep their types.
        try:
            client.tasks.run(
                {"manifest": "demo::fail", "inputValues": {"message": "oops"}}, POLLING
            )
        except TaskFailedError as exc:
            print("TaskFailedError:", exc)

        # Plain threads share one client (and its keep-alive connections).
        def shout(text: str) -> str:
            request: CreateTaskRequest = {"manifest": "demo::upper", "inputValues": {"text": text}}
            return str(client.tasks.run(request, POLLING)["result"]["text"])

        with ThreadPoolExecutor(4) as pool:
            print("from 4 threads:", list(pool.map(shout, ["a", "b", "c", "d"])))

        # run_many works here too: a bounded batch, results in input order.
        requests: list[CreateTaskRequest] = [
            {"manifest": "demo::upper", "inputValues": {"text": f"job{i}"}} for i in range(5)
        ]
        runs = client.tasks.run_many(requests, max_concurrency=2, polling_options=POLLING)
        print("run_many:", [r["result"]["text"] for r in runs])

        # watch() becomes a plain iterator.
        task = client.tasks.create({"manifest": "demo::progress", "inputValues": {"steps": 2}})
        with client.tasks.watch(task["id"], POLLING) as events:
            kinds = [type(event).__name__ for event in events]
        print(f"watch: {len(kinds)} events, last {kinds[-1]}")


if __name__ == "__main__":
    main()
