"""Shared fixtures. Every test runs in the cpu profile, offline."""

import os

os.environ.setdefault("COURSE_PROFILE", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import socket

import pytest
import torch


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test loudly."""

    def guard(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket, "create_connection", guard)
    yield


@pytest.fixture(scope="session")
def tokenizer():
    from course_utils.paths import TOKENIZER_DIR
    from course_utils.tokenizer import load_tokenizer

    return load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def gpt2():
    from course_utils import zoo

    return zoo.load("gpt2", profile="cpu")


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine two threads mostly wait for each other (3x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
