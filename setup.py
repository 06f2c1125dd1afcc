from setuptools import setup

setup(
    name="zmqwamp",
    version="0.1.0",
    description="WAMP v2 over WebSocket bridge to plain ZeroMQ REQ/REP and PUB/SUB services",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py on purpose: it is Twisted's plugin namespace.
    packages=["zmqwamp", "twisted.plugins"],
    # package_dir {"": "."} makes "pip install -e ." a plain .pth of this folder,
    # which is what lets twistd find twisted/plugins/ in an editable install.
    package_dir={"": "."},
    # The demo page and js-client's browser bundle (built and committed: see Makefile js-bundle),
    # served at / and /js/zmqwamp.js by zmqwamp/web.py.
    package_data={"zmqwamp": ["static/*.html", "static/js/*.js"]},
    install_requires=[
        "twisted[tls]>=24.7",
        "autobahn>=24.4",
        "txzmq>=1.0.0",
        "pyzmq>=25",
        "msgpack>=1.0",
        "cbor2>=6.1.4",  # semantic_decoders (6.0: refusing tags); no quadratic-time decodes (6.1.3, 6.1.4)
        "prometheus-client>=0.20",
        "service-identity>=24.1",
        "pyjwt>=2.8",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3"],
    },
    entry_points={"console_scripts": ["zmqwamp = zmqwamp.__main__:main"]},
)
