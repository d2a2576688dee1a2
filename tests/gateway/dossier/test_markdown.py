"""The Markdown dossier: one renderer per section, joined in the dossier's order."""

from __future__ import annotations

from gateway.dossier import annex_iv, markdown, mislabels
from gateway.dossier.schemas import DossierPublic

HEADINGS = [
    "## 1. General description",
    "## 2. Intended purpose",
    "## 3. Data",
    "## 4. Data preparation",
    "## 5. Training",
    "## 6. Evaluation",
    "## 7. Approvals",
    "## 8. Lineage",
    "## 9. Flags",
    "## 10. Audit trail",
    "## 11. Use in production",
    "## 12. Suspected mislabels",
    "## Annex IV checklist",
]


def _dossier(client, people, model_id) -> DossierPublic:
    response = client.get(f"/v1/models/{model_id}/dossier", headers=people["carol"])
    assert response.status_code == 200, response.text
    return DossierPublic.model_validate(response.json())


def _parts(dossier: DossierPublic) -> list[list[str]]:
    return [
        markdown.render_header(dossier),
        markdown.render_general(dossier.general),
        markdown.render_intended_purpose(dossier.intended_purpose),
        markdown.render_data(dossier.data),
        markdown.render_preparation(dossier.preparation),
        markdown.render_training(dossier.training),
        markdown.render_evaluation(dossier.evaluation),
        markdown.render_approvals(dossier.approvals),
        markdown.render_lineage(dossier.lineage),
        markdown.render_flags(dossier.flags, dossier.cleared_flags),
        markdown.render_audit(dossier.audit),
        markdown.render_production(dossier.production),
        mislabels.render(dossier.suspected_mislabels, markdown._table),
        annex_iv.render(dossier.annex_iv),
    ]


class TestRenderers:
    def test_the_dossier_is_its_sections_in_order(self, client, people, worker_shaped):
        dossier = _dossier(client, people, worker_shaped["model_id"])
        parts = _parts(dossier)
        assert all(part[-1] == "" for part in parts)  # each ends with a blank line
        assert [part[0] for part in parts[1:]] == HEADINGS
        text = markdown.render_markdown(dossier)
        assert text == "\n".join(line for part in parts for line in part)

    def test_each_section_tells_what_its_model_holds(self, client, people, worker_shaped):
        dossier = _dossier(client, people, worker_shaped["model_id"])
        evaluation = "\n".join(markdown.render_evaluation(dossier.evaluation))
        assert "| tuned | 0.75 | 0.75 | 1.2 | 2.4 |" in evaluation
        assert "| tuned_beats_best_baseline_exact_match | yes | 0.5 | 0.05 |" in evaluation
        training = "\n".join(markdown.render_training(dossier.training))
        assert "| trainable_parameters | 32768 |" in training and "| seed | 42 |" in training
        preparation = markdown.render_preparation(dossier.preparation)
        [redaction] = [line for line in preparation if line.startswith("- redaction:")]
        assert worker_shaped["files"][0]["content_sha256"] in redaction
        approvals = "\n".join(markdown.render_approvals(dossier.approvals))
        assert "| data_source_approved |" in approvals and "Not promoted." in approvals

    def test_a_missing_report_and_no_flags_are_said_so(self, client, people, trained):
        dossier = _dossier(client, people, trained["model_id"])
        dossier.evaluation.report = None
        assert "No evaluation report was recorded." in markdown.render_evaluation(
            dossier.evaluation
        )
        assert markdown.render_flags([]) == ["## 9. Flags", "", "None.", ""]
