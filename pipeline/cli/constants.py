"""Names the commands' --help text shows, kept here so `chex --help` imports no library module.

tests/pipeline/cli/test_startup.py checks each against the library's own constant.
"""

ADJUST_METHODS = ("holm", "fdr_bh", "bonferroni")  # pipeline.stats.multiple.ADJUST_METHODS
DEMO_SIZES = ("tiny", "small", "medium")  # pipeline.demo.SIZES
# pipeline.synth.specs.DATASETS
SYNTH_DATASETS = ("cxrlt24", "chexpert", "shenzhen", "montgomery", "jsrt", "plco", "ranzcr", "scr")
NEAR_THRESHOLD = 4  # pipeline.corpus.build.DEFAULT_NEAR_THRESHOLD
# data_manifests.adapters
ADAPTERS = ("chexpert", "cxr14", "cxrlt24", "shenzhen", "montgomery", "jsrt", "plco", "ranzcr")
REPORT_FORMATS = ("md", "csv", "tex")  # pipeline.report.formats.FORMATS
ZEROSHOT_SCALES = ("model", "none")  # pipeline.zeroshot.run.SCALES
