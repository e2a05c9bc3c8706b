from merges import gta
from merges.methods.breadcrumbs import BreadcrumbsParams, crumbs
from merges.registry import TensorTask, register


class BreadcrumbsTiesParams(BreadcrumbsParams):
    pass


@register("breadcrumbs_ties", BreadcrumbsTiesParams, matrix_only=False)
def breadcrumbs_ties(task: TensorTask, p: BreadcrumbsTiesParams):
    """Model Breadcrumbs with TIES's sign election (mergekit `breadcrumbs_ties`): the breadcrumbs
    mask, then Δ* = λ Σ_t [sign δ_t = γ] δ_t, γ = sign⁺(Σ_t δ_t), δ_t = w_t M_t ⊙ Δ_t."""
    return gta.combine(task, crumbs(task, p), p, consensus=True)
