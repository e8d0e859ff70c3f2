"""Configuration profiles (.mobileconfig): build, render, sign, inspect, verify."""

from .builders import device_profile, login_items_profile, trust_profile
from .inspect import describe_mobileconfig
from .render import render_xml
from .sign import ProfileSigner, sign_profile
from .verify import verify_profile

__all__ = ["device_profile", "trust_profile", "login_items_profile", "render_xml", "sign_profile",
           "ProfileSigner", "describe_mobileconfig", "verify_profile"]
