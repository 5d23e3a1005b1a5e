import asyncio
import tempfile

from session_repo import SqlSessionRepository


async def main(directory: str) -> None:
    url = f"sqlite+aiosqlite:///{directory}/sessions.sqlite"
    async with SqlSessionRepository(url, default_ttl=600) as repo:  # creates the schema
        await repo.upsert("session-1", "machine-a")  # bind (or rebind) for 600 s
        print("owner:", await repo.lookup("session-1"))  # machine-a
        print("claim:", await repo.claim("session-1", "machine-b"))  # machine-a: taken
        print("claim:", await repo.claim("session-2", "machine-b"))  # machine-b: it was free
        print("touch:", await repo.touch("session-2", ttl=60))  # True: expires in 60 s now
        await repo.upsert("session-3", "machine-b", ttl=0.05)
        await asyncio.sleep(0.1)
        print("expired:", await repo.lookup("session-3"))  # None
        print("machine-a gone:", await repo.delete_owner("machine-a"))  # 1 binding removed
        print("cleaned:", await repo.cleanup())  # 1 expired row removed
        print("live:", (await repo.metrics()).sessions)  # 1 (session-2)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main(directory))
