"""Pipelines and their stages (read): the stage ids a deal moves between."""

from django.http import HttpRequest
from ninja import ModelSchema, Router

from crm.models import Pipeline, PipelineStage

router = Router(tags=["pipelines"])


class StageOut(ModelSchema):
    class Meta:
        model = PipelineStage
        fields = ["id", "name", "order", "probability", "kind"]


class PipelineOut(ModelSchema):
    stages: list[StageOut]

    class Meta:
        model = Pipeline
        fields = ["id", "name", "is_default"]

    @staticmethod
    def resolve_stages(pipeline: Pipeline) -> list[PipelineStage]:
        return sorted(pipeline.stages.all(), key=lambda stage: stage.order)


@router.get("/", response=list[PipelineOut], summary="Pipelines with their stages")
def pipeline_list(request: HttpRequest) -> list[Pipeline]:
    return list(Pipeline.objects.prefetch_related("stages").order_by("-is_default", "name", "id"))
