"""Scheduled retraining: the FineTuneJob a schedule makes from its template on a given day."""

from __future__ import annotations

import datetime

import pytest

from finetune_operator.api.finetunejob import NAME_MAX_LENGTH
from finetune_operator.builders.schedule import ScheduleError, render
from finetune_operator.logic.finetunejob import parse_spec
from finetune_operator.logic.spec import InvalidSpec

FIRST = datetime.datetime(2026, 12, 1, 3, 0, tzinfo=datetime.UTC)
TEMPLATE = """
apiVersion: finetune.ai/v1alpha1
kind: FineTuneJob
metadata:
  name: tickets
  namespace: somewhere-else
  labels: {team: support}
spec:
  baseModel: {uri: hf://HuggingFaceTB/SmolLM2-135M-Instruct}
  dataset: {uri: "s3://support/tickets/${MONTH}/", format: chat}
  output: {uri: "s3://runs/tickets"}
  modelCard: {intendedUse: "Retrained on ${DATE} from the month's tickets (run ${STAMP})."}
"""


def test_a_run_is_named_for_its_day_and_follows_the_calendar():
    body = render(TEMPLATE, FIRST, "monthly-tickets")
    assert body["metadata"]["name"] == "tickets-20261201"
    assert "namespace" not in body["metadata"], "the schedule's namespace decides"
    assert body["metadata"]["labels"] == {"team": "support", "finetune.ai/schedule": "monthly-tickets"}
    assert body["metadata"]["annotations"]["finetune.ai/scheduled-at"] == "2026-12-01T03:00:00Z"
    assert body["spec"]["dataset"]["uri"] == "s3://support/tickets/2026-12/"
    assert body["spec"]["modelCard"]["intendedUse"] == "Retrained on 2026-12-01 from the month's tickets (run 20261201)."
    # Every run is the next version of one model.
    assert body["spec"]["output"]["modelName"] == "tickets"
    assert not isinstance(parse_spec(body["spec"]), InvalidSpec), parse_spec(body["spec"])


def test_the_date_is_utc_and_an_explicit_model_name_stays():
    late = datetime.datetime(2026, 12, 1, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    body = render(TEMPLATE.replace('output: {uri: "s3://runs/tickets"}', "output: {modelName: support}"), late, "s")
    assert body["metadata"]["name"] == "tickets-20261202"
    assert body["spec"]["output"]["modelName"] == "support"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        pytest.param("a: [", "not YAML", id="not-yaml"),
        pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "one FineTuneJob", id="another-kind"),
        pytest.param("apiVersion: finetune.ai/v1alpha1\nkind: FineTuneJob\nspec: {}\n", "metadata.name", id="no-name"),
        pytest.param(f"apiVersion: finetune.ai/v1alpha1\nkind: FineTuneJob\nmetadata: {{name: {'x' * NAME_MAX_LENGTH}}}\n",
                     "longer than", id="name-too-long-for-the-date"),
    ],
)
def test_templates_that_cannot_make_a_job_say_why(template, problem):
    with pytest.raises(ScheduleError, match=problem):
        render(template, FIRST, "s")
