"""The contact form and status page (to be filled)."""

from fastapi import APIRouter

router = APIRouter()
