"""The bare HTTP target of ``bench/api_intake.py``: FastAPI validating the same request model and
answering 201, nothing stored. (A module of its own: FastAPI reads the annotations at run time.)"""

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Ticket(BaseModel):
    requester: str
    subject: str
    body: str


app = FastAPI()


@app.post("/api/v1/tickets", status_code=201)
async def create(ticket: Ticket) -> dict[str, str]:
    return {"number": "000000", "status": "created"}


def main(port: int) -> None:
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
