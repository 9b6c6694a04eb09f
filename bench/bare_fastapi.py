"""A bare FastAPI + pydantic callback endpoint: the body parsed into pydantic models (the body
parameter) and a small JSON answer, nothing else; on uvicorn with uvloop + httptools, the same
stack as the harness. Run by bench_callbacks.py in a process of its own::

    python bench/bare_fastapi.py        # prints "port N", serves until killed
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations.
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, RootModel

PATH = "/callbacks/bounce"


class Item(BaseModel):
    e: str
    ts: int


class Event(BaseModel):
    event: Literal["softbounce", "hardbounce", "unsubscribe"]
    data: list[Item]


class Payload(RootModel[list[Event]]):
    pass


app = FastAPI()


@app.post(PATH)
async def bounce(body: Payload) -> dict[str, Any]:
    return {"status": "success", "accepted": sum(len(e.data) for e in body.root)}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from limit_asgi import serve

    serve(app)
