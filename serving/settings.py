"""Settings of the API role (environment prefix ``RECSYS_``)."""

from __future__ import annotations

from pydantic import Field

from adapters.settings import CommonSettings


class ServingSettings(CommonSettings):
    api_host: str = Field("127.0.0.1", description="Address the API listens on")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the API, web page and "
                          "/metrics")
    api_processes: int = Field(0, ge=0, le=256, description="API processes serving the one "
                               "port, sharing the model's memory-mapped arrays (0: one per "
                               "core)")
    api_key: str = Field("", description="Key for event and admin endpoints both (header "
                         "X-API-Key); empty: open, for development only")
    api_events_key: str = Field("", description="Key of event writers (POST events, ratings, "
                                "watches; reads when keyed), never admin")
    api_admin_key: str = Field("", description="Key of operators (/v1/admin/*; reads when "
                               "keyed), never given to the web page")
    api_read_key_required: bool = Field(False, description="Require a key (events, admin or "
                                        "RECSYS_API_KEY) for reads too")
    api_key_failure_limit: int = Field(10, ge=0, description="Failed key attempts per client "
                                       "address and window before it gets 429 (0: no limit)")
    api_key_failure_window_seconds: float = Field(60.0, gt=0, description="Window of the "
                                                  "failed key attempts count")
    api_max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request "
                                    "body, refused with 413 before it is read")
    api_body_timeout_seconds: float = Field(30.0, gt=0, description="Longest time a request "
                                            "body may take to arrive (408 after)")
    api_timeout_keep_alive: int = Field(5, ge=1, description="Seconds an idle keep-alive "
                                        "connection stays open (uvicorn)")
    api_cors_origins: str = Field("", description="Comma-separated origins allowed by CORS "
                                  "(empty: none, * for any)")
    api_model_poll_seconds: float = Field(2.0, gt=0, description="How often the API looks "
                                          "for a newly published model version")
    api_max_batch: int = Field(1000, ge=1, le=100_000,
                               description="Most events in one POST /v1/events")
    api_redis_timeout_seconds: float = Field(0.25, gt=0, le=10, description="Redis timeout "
                                             "of a request before it answers from the model "
                                             "alone")
    api_metrics_targets: str = Field("", description="Comma-separated /metrics URLs of the "
                                     "other roles (stream workers, trainer) that "
                                     "/v1/admin/metrics and the /ops page read besides the "
                                     "API's own, e.g. http://127.0.0.1:9101/metrics")
    api_cache_size: int = Field(10_000, ge=0, le=10_000_000, description="Recommendation "
                                "responses kept per API process, keyed by user state revision "
                                "and model version (0: off)")
    api_candidate_threshold: int = Field(20_000, ge=0, description="Catalogues with more "
                                         "movies than this are scored over a candidate set "
                                         "(the best of each component) instead of every "
                                         "movie (0: always)")
    log_level: str = Field("info", description="Log level of every role")

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.api_cors_origins.split(",") if o.strip()]
