"""The HTTP API (to be filled)."""

from fastapi import APIRouter

router = APIRouter()
