"""Test doubles: stand-ins for packages that cannot be installed here (the AWS Neuron SDK, a CUDA device).

Each is named as a double and is put in place only inside a test (monkeypatch on sys.modules / torch), never on
sys.path as the real name. They record how the worker calls them, so the tests check the worker against the real
APIs' names and signatures; what the real packages then do is not tested here (see Tests/python/test_targets.py).
"""
