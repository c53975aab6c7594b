"""Built-in survey adapters, one module per survey, registered as a default plugin."""
from astrotransfer.hookspecs import hookimpl


@hookimpl
def register_surveys(register):
    from . import images

    register(images.ImagesSurvey())
    from . import des, hst_phangs, lsst, sdss

    for survey in (sdss.SDSSSurvey(), des.DESSurvey(), hst_phangs.HSTPhangsSurvey(),
                   lsst.LSSTSurvey()):
        register(survey)
    try:
        from . import sim
    except ImportError:
        pass
    else:
        register(sim.SimSurvey())
