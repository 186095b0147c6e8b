"""Unit-layer setup: helper modules' asserts get pytest's detailed failure output."""

import pytest

pytest.register_assert_rewrite("tests.unit.deploy_support", "tests.unit.deploy_k8s_support")
