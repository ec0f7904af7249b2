"""The ceilings: what FastAPI and bcrypt allow at best on the same stack (uvicorn, uvloop, httptools).

- GET /ping: a bare endpoint returning a small JSON object (the framework ceiling).
- POST /bcrypt: exactly one bcrypt check at BCRYPT_ROUNDS in the thread pool (the hashing ceiling); the body is a
  login body, of which only `password` is read.
- POST /upload: a multipart file read in chunks and dropped (the framework's own upload handling, no image work).

Runs in the project's virtual environment (same FastAPI and bcrypt as user-service):

    BCRYPT_ROUNDS=10 CEILING_PASSWORD=... uvicorn ceiling_app:app --app-dir benchmarks/peers
"""

from __future__ import annotations

import os

import bcrypt
from fastapi import FastAPI, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

BCRYPT_ROUNDS = int(os.environ.get("BCRYPT_ROUNDS", "10"))
PASSWORD = os.environ.get("CEILING_PASSWORD", "ceiling password 1").encode()
PASSWORD_HASH = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(BCRYPT_ROUNDS))
CHUNK = 64 * 1024

app = FastAPI()


class Credentials(BaseModel):
    password: str


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/bcrypt")
async def check_password(body: Credentials) -> dict[str, bool]:
    if not await run_in_threadpool(bcrypt.checkpw, body.password.encode(), PASSWORD_HASH):
        raise HTTPException(401, "invalid credentials")
    return {"ok": True}


@app.post("/upload")
async def upload(file: UploadFile) -> dict[str, int]:
    size = 0
    while chunk := await file.read(CHUNK):
        size += len(chunk)
    return {"size": size}
